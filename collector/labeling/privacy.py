"""Face blurring: the blur itself, and the record of what was blurred.

Which pixels of which frames to cover comes from the face tracks (`tracking.py`): every frame of a face in
view, found on sampled frames and followed on the frames between them. A region too large to blur without
destroying the clip makes the clip unsafe.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

METHOD = (
    "pixelated to 8x8 blocks then gaussian-blurred, over each face box enlarged by the margin, on every frame of a "
    "face track (faces confirmed by their keypoints and a second face model, not on a hand, persisting; followed "
    "between sampled frames)"
)

Box = tuple[int, int, int, int]


def blur(frame: np.ndarray, boxes: list[Box]) -> np.ndarray:
    """Blurs the boxes in place; pixelating first makes the face unrecoverable, the blur hides the blocks."""
    for x1, y1, x2, y2 in boxes:
        if x2 - x1 < 2 or y2 - y1 < 2:
            continue
        region = frame[y1:y2, x1:x2]
        small = cv2.resize(region, (8, 8), interpolation=cv2.INTER_AREA)
        coarse = cv2.resize(small, (x2 - x1, y2 - y1), interpolation=cv2.INTER_NEAREST)
        k = max(3, (min(x2 - x1, y2 - y1) // 4) | 1)
        frame[y1:y2, x1:x2] = cv2.GaussianBlur(coarse, (k, k), 0)
    return frame


@dataclass
class PrivacyLog:
    """What was found and blurred, for the manifest and the policy."""

    detections: int = 0  # face boxes over all frames
    max_faces: int = 0  # most faces in one frame
    frames_blurred: int = 0
    largest_area: float = 0.0
    frames_searched: int = 0  # frames between samples the face model looked at
    faces_rejected_as_hands: int = 0  # face detections not blurred because they were a hand

    def add_blurred(self, boxes: list[Box], width: int, height: int) -> None:
        if boxes:
            self.detections += len(boxes)
            self.max_faces = max(self.max_faces, len(boxes))
            self.frames_blurred += 1
            self.largest_area = max(self.largest_area, max((b[2] - b[0]) * (b[3] - b[1]) for b in boxes) / (width * height))

"""Face blurring: which pixels of which frames to cover, from detections on sampled frames, and the blur itself.

Faces are detected on sampled frames only, so every frame between two samples is covered by the faces of
both: a face present in both is covered by the box spanning its two positions (the path it moved along), a
face in one by its own box. A region too large to blur without destroying the clip makes the clip unsafe.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

METHOD = "pixelated to 8x8 blocks then gaussian-blurred, over each face box enlarged by the margin, on every frame between the sampled frames that show it"

Box = tuple[int, int, int, int]


def expand(box, margin: float, width: int, height: int) -> Box:
    x1, y1, x2, y2 = box
    dx, dy = (x2 - x1) * margin, (y2 - y1) * margin
    return (max(0, int(x1 - dx)), max(0, int(y1 - dy)), min(width, int(np.ceil(x2 + dx))), min(height, int(np.ceil(y2 + dy))))


def _centre(box) -> np.ndarray:
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])


def between(before: list, after: list) -> list:
    """Boxes covering the frames between two samples: each face of `after` joined with the nearest face of
    `before` (if that one is within a few face sizes), plus the faces of `before` that nothing joined."""
    covered, used = [], set()
    for box in after:
        nearest = min(range(len(before)), key=lambda i: float(np.linalg.norm(_centre(before[i]) - _centre(box))), default=None)
        if nearest is not None and np.linalg.norm(_centre(before[nearest]) - _centre(box)) <= 3 * max(box[2] - box[0], box[3] - box[1]):
            other = before[nearest]
            used.add(nearest)
            covered.append((min(box[0], other[0]), min(box[1], other[1]), max(box[2], other[2]), max(box[3], other[3])))
        else:
            covered.append(tuple(box))
    covered += [tuple(b) for i, b in enumerate(before) if i not in used]
    return covered


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

    detections: int = 0
    max_faces: int = 0
    frames_blurred: int = 0
    largest_area: float = 0.0
    scores: list[float] = field(default_factory=list)

    def add_sample(self, faces) -> None:
        self.detections += len(faces)
        self.max_faces = max(self.max_faces, len(faces))
        self.scores += [f.score for f in faces]

    def add_blurred(self, boxes: list[Box], width: int, height: int) -> None:
        if boxes:
            self.frames_blurred += 1
            self.largest_area = max(self.largest_area, max((b[2] - b[0]) * (b[3] - b[1]) for b in boxes) / (width * height))

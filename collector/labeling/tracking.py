"""Face tracks across every frame: which detections are faces to blur, and where a face is between detections.

Pure: detections and hands in, boxes to blur out. The face model fires on hands and held objects now and then,
and misses a turned face now and then; a track is how both are told apart from a face in view.

- A track starts at a detection scoring at least `start` whose keypoints form a face (eyes, nose and mouth
  inside its box, the mouth below the eyes), and continues with detections down to `keep` that overlap it.
- Every detection is checked against the confirmed hands of the nearest sampled frame: when its eyes, nose
  and mouth lie inside a hand's outline (with the wrist) it is the hand, not a face, and it counts for nothing. A track is
  blurred once its detections off the hands reach a face's score and persist (or one is sure), and while they
  outnumber those on a hand. A detection lifts its track only if it is also a face to a second, independently
  trained face model looking at a crop around it (plates, mugs, fur, wrists and shirts in the dark are not).
- A face the model loses for a moment keeps its last box for `hold_s` (privacy errs toward blurring a face),
  grown by the distance it was moving.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class TrackerConfig:
    start: float = 0.6  # score a detection needs to start a track
    keep: float = 0.35  # score a detection needs to continue one
    sure: float = 0.8  # score at which one detection is enough to blur
    verified: float = 0.8  # a detection lifts its track only if a second face model gives it this much
    hold_s: float = 0.5  # a lost face stays blurred this long
    margin: float = 0.25  # blurred area around a face box, as a fraction of its size on each side


@dataclass
class _Track:
    box: np.ndarray
    last: int
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4))
    hits: int = 0  # detections that were not on a hand
    best: float = 0.0  # best score of those
    hand_votes: int = 0  # detections on a hand
    confirmed: bool = False
    seen: list[tuple[int, np.ndarray]] = field(default_factory=list)  # boxes before it was confirmed

    def is_face(self, config: TrackerConfig) -> bool:
        """Seen off any hand at a face's score, and persisting (or sure at once), and more a face than a hand."""
        if self.hits <= self.hand_votes:
            return False
        return self.best >= config.sure or (self.hits >= 2 and self.best >= config.start)


def face_shaped(box: Sequence[float], keypoints: np.ndarray | None) -> bool:
    """BlazeFace's keypoints 0-3 (right eye, left eye, nose tip, mouth) lie inside the box and the mouth sits
    below the eyes by a fair part of the face: what a face gives, and what most false boxes do not."""
    if keypoints is None or len(keypoints) < 4:
        return True  # a detector without keypoints: nothing to check
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    if w <= 0 or h <= 0:
        return False
    inner = keypoints[:4]
    pad_x, pad_y = 0.15 * w, 0.15 * h
    inside = (inner[:, 0] >= x1 - pad_x) & (inner[:, 0] <= x2 + pad_x) & (inner[:, 1] >= y1 - pad_y) & (inner[:, 1] <= y2 + pad_y)
    eyes = (inner[0] + inner[1]) / 2
    return bool(inside.all()) and float(np.linalg.norm(inner[3] - eyes)) >= 0.15 * h


def hand_outline(landmarks: np.ndarray) -> np.ndarray:
    """The hand's 21 landmarks and, where there are 21, the start of the forearm (beyond the wrist, away from
    the middle finger's base): the face model fires on wrists and cuffs too."""
    points = landmarks.astype(np.float32)
    if len(points) == 21:
        wrist, middle = points[0], points[9]
        points = np.vstack([points, wrist + 0.6 * (wrist - middle)])
    return cv2.convexHull(points)


def on_a_hand(keypoints: np.ndarray | None, box: Sequence[float], hands: Sequence[np.ndarray]) -> bool:
    """Whether a face detection is a hand: at least three of its eyes, nose and mouth (or its centre when the
    model gives no keypoints) inside a hand's outline enlarged by a fifth of the hand's size."""
    if not hands:
        return False
    points = keypoints[:4] if keypoints is not None and len(keypoints) >= 4 else np.array([[(box[0] + box[2]) / 2, (box[1] + box[3]) / 2]])
    need = 3 if len(points) >= 4 else 1
    for landmarks in hands:
        hull = hand_outline(landmarks)
        size = float(np.ptp(landmarks, axis=0).max())
        inside = sum(cv2.pointPolygonTest(hull, (float(x), float(y)), True) >= -0.2 * size for x, y in points)
        if inside >= need:
            return True
    return False


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _close(track: np.ndarray, box: np.ndarray) -> float:
    """How well a detection continues a track: its IoU, or for a face that moved fast, a nearby centre."""
    overlap = _iou(track, box)
    if overlap > 0:
        return overlap
    size = max(track[2] - track[0], track[3] - track[1], 1.0)
    dist = float(np.hypot((track[0] + track[2] - box[0] - box[2]) / 2, (track[1] + track[3] - box[1] - box[3]) / 2))
    return 0.01 if dist <= size else 0.0


class FaceTracker:
    """Fed every frame of one video in order; returns the boxes to blur in each."""

    def __init__(self, fps: float, width: int, height: int, config: TrackerConfig = TrackerConfig()):
        self.config, self.width, self.height = config, width, height
        self.hold = max(1, round(config.hold_s * fps))
        self.tracks: list[_Track] = []
        self.rejected_as_hands = 0  # detections not blurred because they were a hand
        self._backfill: list[tuple[int, Box]] = []
        self._verify: Callable[[Sequence[float]], float] | None = None
        self.verifications = 0

    @property
    def following(self) -> bool:
        """A track that may be a face is alive (tracks of detections on hands do not count)."""
        return any(t.hits > t.hand_votes for t in self.tracks)

    def update(self, index: int, faces: Sequence | None, hands: Sequence[np.ndarray], verify: Callable[[Sequence[float]], float] | None = None) -> list[Box]:
        """`faces`: this frame's detections (objects with .box, .score, .keypoints) at the `keep` threshold, or
        None when the model did not look at this frame; `hands`: landmarks (21, 2) of the nearest sampled frame's
        hands; `verify`: a second model's score for a box of this frame, asked of a detection below `sure` before
        it may confirm a track. Returns the boxes (margin included) to blur in this frame."""
        if faces is not None:
            self._verify = verify
            self._match(index, faces, hands)
        self.tracks = [t for t in self.tracks if index - t.last <= self.hold]
        boxes = []
        for track in self.tracks:
            if not track.is_face(self.config):
                continue
            if not track.confirmed:  # the frames it was seen in before it was sure to be a face get blurred too
                track.confirmed = True
                self._backfill += [(i, self._expand(b)) for i, b in track.seen if i < index]
                track.seen = []
            box = track.box
            if track.last < index:  # held: the face may have moved on as it was moving
                drift = np.abs(track.velocity) * (index - track.last)
                box = box + np.array([-1, -1, 1, 1]) * np.maximum(drift[:2].max(), drift[2:].max())
            boxes.append(self._expand(box))
        return boxes

    def take_backfill(self) -> list[tuple[int, Box]]:
        """Boxes for earlier frames of tracks confirmed since the last call: (frame index, box)."""
        out, self._backfill = self._backfill, []
        return out

    def _match(self, index: int, faces: Sequence, hands: Sequence[np.ndarray]) -> None:
        pairs = []
        for d, face in enumerate(faces):
            box = np.asarray(face.box, dtype=np.float64)
            for t, track in enumerate(self.tracks):
                score = _close(track.box, box)
                if score > 0:
                    pairs.append((score, t, d))
        used_t, used_d = set(), set()
        for _, t, d in sorted(pairs, reverse=True):
            if t in used_t or d in used_d:
                continue
            used_t.add(t)
            used_d.add(d)
            self._extend(self.tracks[t], index, faces[d], hands)
        for d, face in enumerate(faces):
            if d in used_d or face.score < self.config.start or not face_shaped(face.box, face.keypoints):
                continue
            track = _Track(np.asarray(face.box, dtype=np.float64), index)
            self.tracks.append(track)
            self._extend(track, index, face, hands, new=True)

    def _extend(self, track: _Track, index: int, face, hands: Sequence[np.ndarray], new: bool = False) -> None:
        box = np.asarray(face.box, dtype=np.float64)
        if not new and index > track.last:
            track.velocity = 0.5 * track.velocity + 0.5 * (box - track.box) / (index - track.last)
        track.box, track.last = box, index
        if not track.confirmed:
            track.seen.append((index, box))
        if on_a_hand(face.keypoints, face.box, hands):
            track.hand_votes += 1
            self.rejected_as_hands += 1
        else:
            track.hits += 1
            if face.score > track.best and self._lifts(face, track):
                track.best = face.score

    def _lifts(self, face, track: _Track) -> bool:
        """Whether a detection may lift its track's best score. One below `start` confirms nothing and needs no
        check; one at a face's score must also be a face to the second model, sure ones included (in a dark,
        noisy picture the face model is sure of a shirt). Asked only until the track is sure: a few times a track."""
        if face.score < self.config.start or self._verify is None:
            return True
        if track.best >= self.config.sure:
            return False
        self.verifications += 1
        return self._verify(face.box) >= self.config.verified

    def _expand(self, box: np.ndarray) -> Box:
        x1, y1, x2, y2 = box
        m = self.config.margin
        dx, dy = (x2 - x1) * m, (y2 - y1) * m
        return (max(0, int(x1 - dx)), max(0, int(y1 - dy)), min(self.width, int(np.ceil(x2 + dx))), min(self.height, int(np.ceil(y2 + dy))))

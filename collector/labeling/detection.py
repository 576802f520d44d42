"""Pure geometry of the detectors: resizing frames into model inputs, SSD anchors and box decoding,
non-maximum suppression, and MediaPipe's palm-to-hand crop. No I/O, no model calls: numpy and OpenCV
array functions only, so every step is testable on numbers."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import cv2
import numpy as np

from collector.labeling.cards import InputSpec


@dataclass(frozen=True)
class Placement:
    """Where a model input came from: input pixel (u, v) in 0..1 maps to frame pixel (x0 + u*sx, y0 + v*sy)."""

    x0: float
    y0: float
    sx: float
    sy: float

    def to_frame(self, xy: np.ndarray) -> np.ndarray:
        out = np.array(xy, dtype=np.float64, copy=True)
        out[..., 0] = self.x0 + out[..., 0] * self.sx
        out[..., 1] = self.y0 + out[..., 1] * self.sy
        return out


# Face models are trained on well exposed pictures: in a dim frame a real face scores low while a high-contrast
# print (a skull on a hoodie) stands out and is taken for one. A dim frame is brightened before face detection
# to this mean level, as a camera's auto-exposure would, with the gain bounded so noise is not made a picture.
LIFT_BELOW = 60.0
LIFT_TO = 110.0
LIFT_MAX_GAIN = 8.0


def _mean(image: np.ndarray) -> float:
    return float(image[::4, ::4].mean())  # every 4th pixel: it decides a gain, not a measurement


def dim(image: np.ndarray) -> bool:
    """Too dim for the face models as it is: `lifted` brightens it."""
    return _mean(image) < LIFT_BELOW


def lifted(image: np.ndarray) -> np.ndarray:
    """`image` (uint8, any channel order) brightened to a mean of LIFT_TO when its mean is below LIFT_BELOW;
    unchanged otherwise."""
    mean = _mean(image)
    if mean >= LIFT_BELOW:
        return image
    gain = min(LIFT_MAX_GAIN, LIFT_TO / max(1.0, mean))
    table = np.clip(np.arange(256, dtype=np.float32) * gain, 0, 255).astype(np.uint8)
    return cv2.LUT(image, table)


def fit(image: np.ndarray, spec: InputSpec, window: tuple[int, int, int, int] | None = None) -> tuple[np.ndarray, Placement]:
    """Cuts `window` (x0, y0, x1, y1) out of an RGB frame and resizes it to the model's input size,
    letterboxed (aspect kept, padded with black) or stretched as the card says."""
    x0, y0, x1, y1 = window or (0, 0, image.shape[1], image.shape[0])
    crop = image[y0:y1, x0:x1]
    w, h = x1 - x0, y1 - y0
    tw, th = spec.size
    if spec.resize == "stretch":
        return cv2.resize(crop, (tw, th), interpolation=cv2.INTER_AREA), Placement(x0, y0, w, h)
    scale = min(tw / w, th / h)
    rw, rh = max(1, round(w * scale)), max(1, round(h * scale))
    canvas = np.zeros((th, tw, 3), np.uint8)
    px, py = (tw - rw) // 2, (th - rh) // 2
    canvas[py : py + rh, px : px + rw] = cv2.resize(crop, (rw, rh), interpolation=cv2.INTER_AREA)
    # Input (u, v) -> pixel u*tw - px in the resized crop -> / scale in the window.
    return canvas, Placement(x0 - px / scale, y0 - py / scale, tw / scale, th / scale)


def to_tensor(images: list[np.ndarray], spec: InputSpec) -> np.ndarray:
    """A batch of RGB uint8 images (already at the input size) as the float32 tensor the card describes."""
    batch = np.stack(images).astype(np.float32)
    if spec.color == "BGR":
        batch = batch[..., ::-1]
    lo, hi = spec.range
    batch = lo + batch * ((hi - lo) / 255.0)
    if spec.mean != (0.0, 0.0, 0.0) or spec.std != (1.0, 1.0, 1.0):
        batch = (batch - np.array(spec.mean, np.float32)) / np.array(spec.std, np.float32)
    if spec.layout == "NCHW":
        batch = batch.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(batch, dtype=np.float32)


def tiles(width: int, height: int, grid: tuple[int, int], overlap: float) -> list[tuple[int, int, int, int]]:
    """Overlapping windows covering the frame, `grid` = (columns, rows): small hands and faces in a wide
    frame are found in a tile where they fill more of the model's input."""
    cols, rows = grid
    tw = width / (cols - (cols - 1) * overlap) if cols > 1 else width
    th = height / (rows - (rows - 1) * overlap) if rows > 1 else height
    out = []
    for r in range(rows):
        for c in range(cols):
            x0 = c * tw * (1 - overlap)
            y0 = r * th * (1 - overlap)
            out.append((round(x0), round(y0), min(width, round(x0 + tw)), min(height, round(y0 + th))))
    return out


def ssd_anchors(decode: Mapping) -> np.ndarray:
    """Anchor centres (N, 2) in 0..1, as MediaPipe's SsdAnchorsCalculator makes them with fixed_anchor_size:
    consecutive layers of the same stride share one grid, each adding one or two anchors per cell."""
    size = int(decode["input_size"])
    strides = list(decode["strides"])
    per_layer = 1 + (float(decode.get("interpolated_scale_aspect_ratio", 1.0)) > 0)
    offset = float(decode.get("anchor_offset", 0.5))
    centres = []
    i = 0
    while i < len(strides):
        j = i
        while j < len(strides) and strides[j] == strides[i]:
            j += 1
        grid = math.ceil(size / strides[i])
        per_cell = per_layer * (j - i)
        ys, xs = np.meshgrid((np.arange(grid) + offset) / grid, (np.arange(grid) + offset) / grid, indexing="ij")
        cell = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centres.append(np.repeat(cell, per_cell, axis=0))
        i = j
    return np.concatenate(centres).astype(np.float32)


def decode_ssd(raw_boxes: np.ndarray, raw_scores: np.ndarray, anchors: np.ndarray, decode: Mapping, threshold: float) -> list[np.ndarray]:
    """Per image, the detections scoring at least `threshold`: rows of [x1, y1, x2, y2, score, kx0, ky0, ...]
    in input coordinates 0..1 (raw boxes are [dx, dy, w, h, keypoints...] relative to the anchor, in input pixels)."""
    scale = float(decode["box_scale"])
    clip = float(decode.get("score_clip", 100.0))
    scores = 1.0 / (1.0 + np.exp(-np.clip(raw_scores.reshape(raw_scores.shape[0], -1).astype(np.float64), -clip, clip)))
    out = []
    for b in range(raw_boxes.shape[0]):
        keep = np.nonzero(scores[b] >= threshold)[0]
        raw = raw_boxes[b, keep].astype(np.float64)
        a = anchors[keep].astype(np.float64)
        cx = raw[:, 0] / scale + a[:, 0]
        cy = raw[:, 1] / scale + a[:, 1]
        w = raw[:, 2] / scale
        h = raw[:, 3] / scale
        kps = raw[:, 4:].reshape(len(keep), (raw_boxes.shape[-1] - 4) // 2, 2) / scale + a[:, None, :]
        rows = np.column_stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, scores[b, keep], kps.reshape(len(keep), kps.shape[1] * 2)])
        out.append(rows)
    return out


def place(rows: np.ndarray, placement: Placement) -> np.ndarray:
    """Detections from input coordinates (0..1) to frame pixels."""
    if not len(rows):
        return rows
    out = rows.copy()
    pts = placement.to_frame(rows[:, [0, 1, 2, 3]].reshape(-1, 2, 2))
    out[:, :4] = pts.reshape(-1, 4)
    if rows.shape[1] > 5:
        kps = placement.to_frame(rows[:, 5:].reshape(len(rows), -1, 2))
        out[:, 5:] = kps.reshape(len(rows), -1)
    return out


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def weighted_nms(rows: np.ndarray, threshold: float, limit: int | None = None) -> np.ndarray:
    """MediaPipe's WEIGHTED suppression: each cluster of boxes overlapping its best one is merged into the
    score-weighted mean of its members (steadier boxes than keeping only the best), scored as the best."""
    if not len(rows):
        return rows
    order = rows[np.argsort(-rows[:, 4])]
    merged = []
    while len(order) and (limit is None or len(merged) < limit):
        overlap = iou(order[0], order) >= threshold
        cluster = order[overlap]
        weights = cluster[:, 4:5]
        row = (cluster * weights).sum(axis=0) / weights.sum()
        row[4] = cluster[0, 4]
        merged.append(row)
        order = order[~overlap]
    return np.array(merged)


@dataclass(frozen=True)
class Roi:
    """A rotated square crop in frame pixels: centre, side, rotation (radians, counter-clockwise)."""

    cx: float
    cy: float
    size: float
    angle: float


def palm_roi(row: np.ndarray, decode: Mapping) -> Roi:
    """MediaPipe's palm-to-hand rectangle: turned so the wrist (keypoint 0) to middle-finger base (keypoint 2)
    points up, shifted towards the fingers and enlarged to hold the whole hand."""
    x1, y1, x2, y2 = row[:4]
    k = row[5:].reshape(-1, 2)
    start, end = (int(i) for i in decode.get("roi_rotation_keypoints", (0, 2)))
    target = math.radians(float(decode.get("roi_rotation_target_degrees", 90.0)))
    angle = target - math.atan2(-(k[end, 1] - k[start, 1]), k[end, 0] - k[start, 0])
    angle = angle - 2 * math.pi * math.floor((angle + math.pi) / (2 * math.pi))
    w, h = x2 - x1, y2 - y1
    shift_y = float(decode.get("roi_shift_y", -0.5))
    # Shift along the hand's own axis, as RectTransformationCalculator does.
    cx = (x1 + x2) / 2 - h * shift_y * math.sin(angle)
    cy = (y1 + y2) / 2 + h * shift_y * math.cos(angle)
    size = max(w, h) * float(decode.get("roi_scale", 2.6))
    return Roi(cx, cy, size, angle)


# The landmarks MediaPipe's HandLandmarkLandmarksToRoi frames a tracked hand with: wrist, the thumb's base
# joints and the first two joints of each finger (fingertips move too much to steady the crop).
TRACK_LANDMARKS = (0, 1, 2, 3, 5, 6, 9, 10, 13, 14, 17, 18)


def landmark_roi(landmarks: np.ndarray, decode: Mapping) -> Roi:
    """The crop where a hand seen at `landmarks` (21, 2) is looked for in the next frame: turned so the wrist
    (0) to middle-finger base (9) points up, around the steadier landmarks, enlarged (`track_roi_scale`) and
    shifted towards the fingers (`track_roi_shift_y`), as MediaPipe tracks a hand without the palm detector."""
    wrist, middle = landmarks[0], landmarks[9]
    target = math.radians(float(decode.get("roi_rotation_target_degrees", 90.0)))
    angle = target - math.atan2(-(middle[1] - wrist[1]), middle[0] - wrist[0])
    angle = angle - 2 * math.pi * math.floor((angle + math.pi) / (2 * math.pi))
    points = landmarks[list(TRACK_LANDMARKS)]
    cos, sin = math.cos(angle), math.sin(angle)
    # Into the hand's own frame (rotate by +angle, image y down), where its extent is measured.
    rotated = np.column_stack([points[:, 0] * cos + points[:, 1] * sin, -points[:, 0] * sin + points[:, 1] * cos])
    lo, hi = rotated.min(axis=0), rotated.max(axis=0)
    centre = (lo + hi) / 2
    w, h = hi - lo
    shift = float(decode.get("track_roi_shift_y", -0.1)) * h
    cy_own = centre[1] + shift
    cx = centre[0] * cos - cy_own * sin
    cy = centre[0] * sin + cy_own * cos
    return Roi(float(cx), float(cy), float(max(w, h)) * float(decode.get("track_roi_scale", 2.0)), angle)


def roi_matrix(roi: Roi, out_size: int) -> np.ndarray:
    """Affine 2x3 matrix taking frame pixels into the `out_size` square crop of `roi`."""
    scale = out_size / roi.size
    cos, sin = math.cos(roi.angle) * scale, math.sin(roi.angle) * scale
    # Rotate by +angle about the ROI centre (image y points down), then centre in the output.
    return np.array(
        [
            [cos, sin, out_size / 2 - cos * roi.cx - sin * roi.cy],
            [-sin, cos, out_size / 2 + sin * roi.cx - cos * roi.cy],
        ],
        dtype=np.float64,
    )


def crop_roi(image: np.ndarray, roi: Roi, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The rotated crop and the inverse matrix that maps crop pixels back to the frame."""
    matrix = roi_matrix(roi, out_size)
    crop = cv2.warpAffine(image, matrix, (out_size, out_size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return crop, cv2.invertAffineTransform(matrix)


def apply_affine(matrix: np.ndarray, xy: np.ndarray) -> np.ndarray:
    return xy @ matrix[:, :2].T + matrix[:, 2]

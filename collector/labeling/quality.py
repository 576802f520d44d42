"""Picture and stream quality of a clip, accumulated frame by frame (pure: arrays in, numbers out)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

# A frame repeats the one before when almost none of its pixels changed at all. A live camera's sensor noise
# changes a few percent of pixels by a grey level or more even in a still room after encoding (0.8-2% at a
# noise of 0.7 grey levels through mp4v); a frozen camera's repeated frame re-encoded changes ~0.1%, more only
# where the encoder refines a block. Compared on a subsampled frame (nearest pixel, so noise is kept).
FROZEN_CHANGED = 0.005
_FREEZE_WIDTH = 320
# Share of sampled frames whose hands must be measured for their exposure to decide the clip's.
HANDS_EXPOSURE_SHARE = 0.25
# Clipped pixels: at or beyond these grey levels detail is gone.
DARK, BRIGHT = 8, 247
# Edge blur is given in pixels of the frame scaled to this long side, so a 4K and a VGA frame of one scene
# read alike; it is measured at _BLUR_SIDE (fewer pixels, the same answer for any blur that matters).
SHARPNESS_SIDE = 480
_BLUR_SIDE = 384
_COARSE_SIGMA = 2.0
MAX_BLUR_PX = 50.0
# Directional derivatives every 22.5 degrees: motion blur smears one direction only.
_DIRECTIONS = tuple((math.cos(math.pi * k / 8), math.sin(math.pi * k / 8)) for k in range(8))


def edge_blur(grey: np.ndarray) -> float | None:
    """How far the strongest edges are smeared, in pixels of the frame scaled down to 480 px on its long side
    (smaller frames: their own pixels), in the direction where they are smeared most; independent of the
    edges' contrast and of the resolution.

    At the 2% strongest edges of each of 8 directions, the fine-scale derivative is compared with the derivative
    after a further gaussian blur of sigma 2 px: for an edge already blurred by sigma s their ratio is about
    sqrt(s^2 + 4) / s, so s = 2 / sqrt(ratio^2 - 1). A crisp edge reads under 2 px, a soft but usable picture
    2-3 px, defocus and motion blur more (motion blur smears one direction only, hence the worst direction).
    None for a frame without edges to judge (a blank wall, black)."""
    h, w = grey.shape[:2]
    long_side = max(h, w)
    scale = min(1.0, _BLUR_SIDE / long_side)
    if scale < 1.0:
        grey = cv2.resize(grey, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    fine = grey.astype(np.float32)
    coarse = cv2.GaussianBlur(fine, (0, 0), _COARSE_SIGMA)
    fx, fy = cv2.Sobel(fine, cv2.CV_32F, 1, 0, ksize=1), cv2.Sobel(fine, cv2.CV_32F, 0, 1, ksize=1)
    cx, cy = cv2.Sobel(coarse, cv2.CV_32F, 1, 0, ksize=1), cv2.Sobel(coarse, cv2.CV_32F, 0, 1, ksize=1)
    worst = math.inf
    for cos, sin in _DIRECTIONS:
        c = np.abs(cx * cos + cy * sin)
        edge = float(np.percentile(c[::2, ::2], 98))
        if edge < 1.0:  # under one grey level per pixel across the strongest edges: nothing to judge
            return None
        strong = c >= edge
        worst = min(worst, float(np.abs(fx * cos + fy * sin)[strong].mean() / c[strong].mean()))
    native = _COARSE_SIGMA / math.sqrt(max(worst * worst - 1, 1e-6)) / scale
    # A larger frame's smear is given at 480 px; a smaller frame's in its own pixels (a low-resolution camera
    # is not blurred for being small).
    return round(min(MAX_BLUR_PX, native * min(1.0, SHARPNESS_SIDE / long_side)), 3)


def clipped(grey: np.ndarray, peak: np.ndarray | None = None) -> tuple[float, float]:
    """Fractions of pixels crushed to black (grey) and blown out (a colour channel saturated, from `peak`, the
    brightest channel of each pixel; the grey level when not given): a blown channel has lost the colour."""
    n = max(1, grey.size)
    top = grey if peak is None else peak
    return float(np.count_nonzero(grey <= DARK)) / n, float(np.count_nonzero(top >= BRIGHT)) / n


def brightest_channel(frame: np.ndarray) -> np.ndarray:
    """Per pixel, the largest of its B, G and R values."""
    b, g, r = cv2.split(frame)
    return cv2.max(cv2.max(b, g), r)


@dataclass
class PictureQuality:
    """Every decoded frame feeds the freeze check; sampled frames feed sharpness and exposure; hand regions of
    sampled frames feed the hands' own exposure."""

    frames: int = 0
    frozen: int = 0
    blur: list[float] = field(default_factory=list)
    luma: list[float] = field(default_factory=list)
    dark: list[float] = field(default_factory=list)
    bright: list[float] = field(default_factory=list)
    hand_luma: list[float] = field(default_factory=list)
    hand_dark: list[float] = field(default_factory=list)
    hand_bright: list[float] = field(default_factory=list)
    hand_frames: int = 0  # sampled frames whose hands were measured
    _previous: np.ndarray | None = None

    def add_frame(self, grey: np.ndarray, repeated: bool = False) -> None:
        """`repeated`: the capture times say this frame is no new picture (delivered twice, or stalled)."""
        h, w = grey.shape[:2]
        small = grey if w <= _FREEZE_WIDTH else cv2.resize(grey, (_FREEZE_WIDTH, max(1, round(h * _FREEZE_WIDTH / w))), interpolation=cv2.INTER_NEAREST)
        if self._previous is not None and small.shape == self._previous.shape:
            # Only pixels with detail can change: a blown-out or black frame says nothing about freezing.
            live = cv2.inRange(self._previous, DARK + 1, BRIGHT - 1)
            judged = cv2.countNonZero(live)
            changed = cv2.countNonZero(cv2.bitwise_and(cv2.absdiff(small, self._previous), live))
            if repeated or (judged >= 0.05 * small.size and changed < FROZEN_CHANGED * judged):
                self.frozen += 1
        elif self._previous is not None and repeated:
            self.frozen += 1
        self._previous = small
        self.frames += 1

    def add_sample(self, grey: np.ndarray, peak: np.ndarray | None = None) -> None:
        """A sampled frame: its grey levels and (`peak`) its brightest channel per pixel."""
        blur = edge_blur(grey)
        if blur is not None:
            self.blur.append(blur)
        self.luma.append(float(grey.mean()))
        dark, bright = clipped(grey, peak)
        self.dark.append(dark)
        self.bright.append(bright)

    def add_hands(self, grey: np.ndarray, hands: list[np.ndarray], peak: np.ndarray | None = None) -> None:
        """Exposure inside the outline of each hand's landmarks on a sampled frame: blown-out or crushed hands
        are lost even in a well-lit frame, while a white or black backdrop around well-exposed hands is fine."""
        measured = False
        for landmarks in hands:
            mask = np.zeros(grey.shape[:2], np.uint8)
            cv2.fillConvexPoly(mask, cv2.convexHull(landmarks.astype(np.int32)), 255)
            area = cv2.countNonZero(mask)
            if area >= 64:
                measured = True
                self.hand_luma.append(float(cv2.mean(grey, mask)[0]))
                self.hand_dark.append(cv2.countNonZero(cv2.bitwise_and(cv2.inRange(grey, 0, DARK), mask)) / area)
                top = grey if peak is None else peak
                self.hand_bright.append(cv2.countNonZero(cv2.bitwise_and(cv2.inRange(top, BRIGHT, 255), mask)) / area)
        self.hand_frames += measured

    def summary(self) -> dict:
        def mean(values: list[float]) -> float | None:
            return round(float(np.mean(values)), 4) if values else None

        # The hands' own exposure speaks for the clip only where they were seen in a good part of it (in a dark
        # clip the few hands found are the brightest moments).
        hands = self.hand_frames >= HANDS_EXPOSURE_SHARE * max(1, len(self.luma))
        return {
            "frames": self.frames,
            "sampled_frames": len(self.luma),
            "frozen_fraction": round(self.frozen / max(1, self.frames - 1), 4),
            "edge_blur_px": round(float(np.median(self.blur)), 3) if self.blur else None,
            "luma_mean": round(float(np.mean(self.luma)), 2) if self.luma else None,
            "underexposed_fraction": mean(self.dark),
            "overexposed_fraction": mean(self.bright),
            "hands_luma_mean": round(float(np.mean(self.hand_luma)), 2) if hands else None,
            "hands_underexposed_fraction": mean(self.hand_dark) if hands else None,
            "hands_overexposed_fraction": mean(self.hand_bright) if hands else None,
        }


def repeated_frames(capture_ns: list[int]) -> list[bool]:
    """Per frame, whether its capture time says it is no new picture: it came less than a quarter of the usual
    frame interval after the one before (a source delivering one picture twice, or a stalled clock)."""
    if len(capture_ns) < 3:
        return [False] * len(capture_ns)
    steps = np.diff(np.asarray(capture_ns, dtype=np.int64))
    moving = steps[steps > 0]
    if not len(moving):
        return [False] + [True] * len(steps)
    usual = float(np.median(moving))
    return [False] + [bool(step < usual / 4) for step in steps]


def stream_quality(manifest: dict) -> dict:
    """What the recorder measured per stream: drops, losses, parse errors and gaps, as fractions and seconds."""
    out = {}
    for stream in manifest.get("streams", []):
        count = int(stream.get("count") or 0)
        errors = sum((stream.get("parse_errors") or {}).values())
        gaps = [(g["end_ns"] - g["start_ns"]) / 1e9 for g in stream.get("gaps", []) if g.get("end_ns") is not None and g.get("start_ns") is not None]
        entry = {"kind": stream.get("kind"), "longest_gap_s": round(max(gaps, default=0.0), 3)}
        if stream.get("kind") == "camera":
            missing = int(stream.get("dropped") or 0) + int(stream.get("late") or 0)
            entry["frame_drop_fraction"] = round(missing / max(1, count + missing), 4)
        else:
            lost = int(stream.get("lost") or 0) + int(stream.get("dropped") or 0)
            entry["sample_loss_fraction"] = round(lost / max(1, count + lost), 4)
            entry["parse_error_rate"] = round(errors / max(1, count + errors), 4)
        out[stream.get("name", "?")] = entry
    return out


def hand_motion(tracks: list[tuple[float, list[np.ndarray]]], width: int) -> dict:
    """Hand movement between consecutive sampled frames: each hand is matched to the nearest hand of the
    previous sample, and its landmarks' speed is measured in frame widths per second.

    `tracks` holds (time in seconds, [landmarks (21, 2) per hand]) per sampled frame."""
    speeds = []
    for (t0, before), (t1, after) in zip(tracks, tracks[1:]):
        if not before or not after or t1 <= t0:
            continue
        for hand in after:
            previous = min(before, key=lambda b: float(np.linalg.norm(b.mean(axis=0) - hand.mean(axis=0))))
            moved = np.linalg.norm(hand - previous, axis=1).mean() / width
            speeds.append(moved / (t1 - t0))
    if not speeds:
        return {"hand_speed": 0.0, "motion_energy": 0.0}
    return {"hand_speed": round(float(np.mean(speeds)), 4), "motion_energy": round(float(np.mean(np.square(speeds))), 5)}


def quality_score(hands: float, picture: dict, streams: dict, policy) -> float:
    """0..1 for the reward: a weighted geometric mean, so one bad aspect pulls the score down hard."""
    # Full marks up to half the blur limit, 3/4 at the limit, falling beyond it.
    blur = picture.get("edge_blur_px")
    sharp = 1.0 if blur is None else min(1.0, max(0.05, 1.25 - blur / (2 * policy.max_edge_blur_px)))
    luma = picture.get("luma_mean") or 0.0
    margin = min(luma - policy.min_luma, policy.max_luma - luma)
    exposure = max(0.0, min(1.0, margin / 30.0)) * (1 - (picture.get("underexposed_fraction") or 0) - (picture.get("overexposed_fraction") or 0))
    continuity = 1 - (picture.get("frozen_fraction") or 0.0)
    for entry in streams.values():
        for key in ("frame_drop_fraction", "sample_loss_fraction", "parse_error_rate"):
            continuity *= 1 - entry.get(key, 0.0)
    parts = ((min(1.0, hands / 0.9), 0.4), (sharp, 0.2), (max(0.0, exposure), 0.2), (max(0.0, continuity), 0.2))
    if any(value <= 0 for value, _ in parts):
        return 0.0
    return round(math.exp(sum(w * math.log(v) for v, w in parts)), 4)

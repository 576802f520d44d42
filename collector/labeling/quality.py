"""Picture and stream quality of a clip, accumulated frame by frame (pure: arrays in, numbers out)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

# A frame counts as a repeat of the one before when its thumbnail differs by less than this mean grey level:
# a frozen or duplicating camera repeats frames exactly, while a live sensor's noise never does.
FROZEN_DIFF = 0.15
_THUMB = (160, 120)
DARK, BRIGHT = 16, 235


@dataclass
class PictureQuality:
    """Every decoded frame feeds the freeze check; sampled frames feed sharpness and exposure."""

    frames: int = 0
    frozen: int = 0
    sharpness: list[float] = field(default_factory=list)
    luma: list[float] = field(default_factory=list)
    dark: list[float] = field(default_factory=list)
    bright: list[float] = field(default_factory=list)
    _previous: np.ndarray | None = None

    def add_frame(self, grey: np.ndarray) -> None:
        thumb = cv2.resize(grey, _THUMB, interpolation=cv2.INTER_AREA).astype(np.int16)
        if self._previous is not None and thumb.shape == self._previous.shape and float(np.abs(thumb - self._previous).mean()) < FROZEN_DIFF:
            self.frozen += 1
        self._previous = thumb
        self.frames += 1

    def add_sample(self, grey: np.ndarray) -> None:
        self.sharpness.append(float(cv2.Laplacian(grey, cv2.CV_64F).var()))
        self.luma.append(float(grey.mean()))
        self.dark.append(float((grey < DARK).mean()))
        self.bright.append(float((grey > BRIGHT).mean()))

    def summary(self) -> dict:
        return {
            "frames": self.frames,
            "sampled_frames": len(self.luma),
            "frozen_fraction": round(self.frozen / max(1, self.frames - 1), 4),
            "sharpness": round(float(np.median(self.sharpness)), 2) if self.sharpness else None,
            "luma_mean": round(float(np.mean(self.luma)), 2) if self.luma else None,
            "underexposed_fraction": round(float(np.mean(self.dark)), 4) if self.dark else None,
            "overexposed_fraction": round(float(np.mean(self.bright)), 4) if self.bright else None,
        }


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
    sharp = min(1.0, (picture.get("sharpness") or 0.0) / max(1e-9, 3 * policy.min_sharpness)) if policy.min_sharpness else 1.0
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

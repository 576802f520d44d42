"""The accept/reject decision: pure, from measured labels and quality to reasons a machine and a person can read."""

from __future__ import annotations

from dataclasses import dataclass

from collector.config import PolicyConfig


@dataclass(frozen=True)
class Reason:
    code: str
    message: str
    value: float | None = None
    limit: float | None = None

    def as_dict(self) -> dict:
        return {"code": self.code, "message": self.message, "value": self.value, "limit": self.limit}


# The recorder's per-stream counts: (measured fraction, policy limit, reason code, sentence).
_STREAM_LIMITS = (
    ("frame_drop_fraction", "max_frame_drop_fraction", "frame_drops", "camera {name} dropped {value} of its frames (limit {limit})"),
    ("sample_loss_fraction", "max_sample_loss_fraction", "sample_loss", "sensor {name} lost {value} of its samples (limit {limit})"),
    ("parse_error_rate", "max_parse_error_rate", "parse_errors", "sensor {name}: {value} of what it sent did not parse (limit {limit})"),
)


def _pct(x: float) -> str:
    return f"{x * 100:.0f}%"


def decide(facts: dict, policy: PolicyConfig) -> list[Reason]:
    """Every threshold the clip misses, in a fixed order. `facts` holds: duration_s, cameras (name -> picture
    summary with hand_fraction), streams (name -> stream quality), privacy (faces, largest_area, blurred)."""
    reasons: list[Reason] = []
    cameras: dict = facts.get("cameras", {})
    several = len(cameras) > 1

    def where(name: str) -> str:
        return f" (camera {name})" if several else ""

    duration = facts.get("duration_s") or 0.0
    if duration < policy.min_duration_s:
        reasons.append(Reason("too_short", f"too short: {duration:.1f} s < {policy.min_duration_s:g} s", duration, policy.min_duration_s))
    if not cameras or not any(c.get("sampled_frames") for c in cameras.values()):
        reasons.append(Reason("no_video", "no video: the clip has no camera frames to learn from"))
        return reasons
    best = max(c.get("hand_fraction", 0.0) for c in cameras.values())
    if best < policy.min_hand_fraction:
        reasons.append(
            Reason(
                "no_hands",
                f"no hands in {_pct(1 - best)} of frames (at least {_pct(policy.min_hand_fraction)} must show hands)",
                round(best, 4),
                policy.min_hand_fraction,
            )
        )
    for name, c in cameras.items():
        if not c.get("sampled_frames"):
            continue
        reasons += _picture(c, where(name), policy)
    for name, s in facts.get("streams", {}).items():
        for key, limit_name, code, sentence in _STREAM_LIMITS:
            value, limit = s.get(key, 0.0), getattr(policy, limit_name)
            if value > limit:
                reasons.append(Reason(code, sentence.format(name=name, value=_pct(value), limit=_pct(limit)), value, limit))
        gap = s.get("longest_gap_s", 0.0)
        if gap > policy.max_gap_s:
            reasons.append(Reason("stream_gap", f"{name} was missing for {gap:.1f} s (limit {policy.max_gap_s:g} s)", gap, policy.max_gap_s))
    privacy = facts.get("privacy", {})
    if privacy.get("faces") and not privacy.get("blurred"):
        reasons.append(Reason("faces_not_blurred", f"{privacy['faces']} face(s) seen and face blurring is off (labeler.blur_faces)", privacy["faces"], 0))
    elif privacy.get("largest_area", 0.0) > policy.max_face_area:
        area = privacy["largest_area"]
        reasons.append(
            Reason(
                "face_unblurrable",
                f"a face region covers {_pct(area)} of the frame (limit {_pct(policy.max_face_area)}): it cannot be blurred reliably without losing the clip",
                round(area, 4),
                policy.max_face_area,
            )
        )
    return reasons


def _picture(c: dict, where: str, policy: PolicyConfig) -> list[Reason]:
    """Sharpness, exposure and freezes of one camera; at most one reason for each."""
    out = []
    blur = c.get("edge_blur_px")
    if blur is not None and blur > policy.max_edge_blur_px:
        out.append(
            Reason(
                "blurry",
                f"too blurry{where}: edges are smeared over {blur:.1f} px at 480 px wide (limit {policy.max_edge_blur_px:g} px)",
                blur,
                policy.max_edge_blur_px,
            )
        )
    out += _exposure(c, where, policy)
    frozen = c.get("frozen_fraction") or 0.0
    if frozen > policy.max_frozen_fraction:
        out.append(
            Reason(
                "frozen",
                f"frozen video{where}: {_pct(frozen)} of frames repeat the one before (limit {_pct(policy.max_frozen_fraction)})",
                frozen,
                policy.max_frozen_fraction,
            )
        )
    return out


def _exposure(c: dict, where: str, policy: PolicyConfig) -> list[Reason]:
    """Too dark or too bright: judged on the hands' own pixels where hands were seen (a black or white
    backdrop behind well-exposed hands is fine), on the whole frame otherwise; at most one reason each."""
    out = []
    if c.get("hands_luma_mean") is not None:
        luma, dark, bright, what = c["hands_luma_mean"], c.get("hands_underexposed_fraction") or 0.0, c.get("hands_overexposed_fraction") or 0.0, "the hands"
        bright_limit = policy.max_hands_overexposed_fraction
    else:
        luma, dark, bright, what = c.get("luma_mean") or 0.0, c.get("underexposed_fraction") or 0.0, c.get("overexposed_fraction") or 0.0, "the picture"
        bright_limit = policy.max_overexposed_fraction
    over = "over-exposed hands" if what == "the hands" else "over-exposed"
    if luma < policy.min_luma:
        out.append(Reason("too_dark", f"too dark{where}: mean luma of {what} {luma:.0f} < {policy.min_luma:g}", luma, policy.min_luma))
    elif dark > policy.max_underexposed_fraction:
        message = f"too dark{where}: {_pct(dark)} of {what} is crushed to black (limit {_pct(policy.max_underexposed_fraction)})"
        out.append(Reason("too_dark", message, dark, policy.max_underexposed_fraction))
    frame_bright = c.get("overexposed_fraction") or 0.0
    if luma > policy.max_luma:
        out.append(Reason("too_bright", f"too bright{where}: mean luma of {what} {luma:.0f} > {policy.max_luma:g}", luma, policy.max_luma))
    elif bright > bright_limit:
        message = f"{over}{where}: {_pct(bright)} of {what} is blown out to white (limit {_pct(bright_limit)})"
        out.append(Reason("too_bright", message, bright, bright_limit))
    elif what == "the hands" and frame_bright > policy.max_backdrop_overexposed_fraction:
        limit = policy.max_backdrop_overexposed_fraction
        message = f"over-exposed{where}: {_pct(frame_bright)} of the picture is blown out to white around the hands (limit {_pct(limit)})"
        out.append(Reason("too_bright", message, frame_bright, limit))
    return out


def decision(reasons: list[Reason]) -> dict:
    if not reasons:
        return {"status": "accepted", "accepted": True, "reasons": [], "summary": "accepted: every check passed"}
    return {
        "status": "rejected",
        "accepted": False,
        "reasons": [r.as_dict() for r in reasons],
        "summary": "rejected: " + "; ".join(r.message for r in reasons),
    }

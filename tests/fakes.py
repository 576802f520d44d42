"""Fakes behind the real interfaces, for tests whose subject is elsewhere (the real parts exist and have tests
of their own)."""

from __future__ import annotations

from pathlib import Path


class ClaimedLabeler:
    """The validator's labeler seam (`assess(clip, manifest) -> {quality, decision}`) answering with the
    device's own claim: for tests of the chain flow on synthetic clips that no real model would accept.
    tests/test_attacks.py runs the real labeler."""

    provider = "fake"

    def assess(self, clip: Path, manifest: dict, **_) -> dict:
        decision = manifest.get("decision") or {"accepted": False, "summary": "no decision"}
        return {"quality": {"score": (manifest.get("quality") or {}).get("score", 0.0)}, "decision": decision}

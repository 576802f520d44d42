"""What an operator sees of each clip: its outbox state with the manifest's labels and the chain's record.
`knack clips` prints it; the app's Clips screen shows the same rows."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from collector.bundle import MANIFEST, manifest_task
from storage.outbox.db import Outbox

REWARD_UNIT = 10**18  # KNACK has 18 decimals


@dataclass(frozen=True)
class ClipView:
    clip_id: str
    state: str
    path: str
    duration_s: float | None
    quality: float | None
    hands: str  # e.g. "hands in 90%"
    reason: str  # why it was rejected or is stuck, in words; "" when all is well
    cid: str | None
    attempts: int
    tx_hash: str | None
    batch: int | None
    reward_tokens: str | None  # settled clips only
    task: str = ""  # what the operator named the work ("" when none)
    manifest: dict = field(default_factory=dict, compare=False, repr=False)


def _manifest(path: str) -> dict:
    try:
        return json.loads((Path(path) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def clip_view(outbox: Outbox, entry) -> ClipView:
    manifest = _manifest(entry.path)
    chain = outbox.chain_record(entry.clip_id) or {}
    decision = manifest.get("decision") or {}
    hands = ((manifest.get("labels") or {}).get("hands") or {}).get("hand_fraction")
    if entry.state == "rejected":
        reason = entry.reason or decision.get("summary", "")
    elif chain.get("chain_reason"):
        reason = f"rejected by the validator: {chain['chain_reason']}"
    else:
        reason = entry.last_error
    reward = chain.get("reward")
    return ClipView(
        clip_id=entry.clip_id,
        state=entry.state,
        path=entry.path,
        duration_s=manifest.get("duration_s"),
        quality=(manifest.get("quality") or {}).get("score"),
        hands=f"hands in {hands:.0%}" if hands is not None else "",
        reason=reason,
        cid=entry.cid,
        attempts=entry.attempts,
        tx_hash=chain.get("tx_hash"),
        batch=chain.get("batch_id"),
        reward_tokens=f"{int(reward) / REWARD_UNIT:.4f}" if reward is not None and entry.state == "settled" else None,
        task=manifest_task(manifest),
        manifest=manifest,
    )


def clip_views(outbox: Outbox, state: str | None = None) -> list[ClipView]:
    """Every clip the outbox knows, oldest first, optionally only those in `state`."""
    return [clip_view(outbox, e) for e in outbox.entries() if state in (None, e.state)]


def describe(view: ClipView) -> list[str]:
    """One clip in full, as lines: what `knack clips CLIP_ID` prints and the app's detail pane shows."""
    shown = {k: v for k, v in view.manifest.items() if k not in ("signature", "files")}
    return [
        f"{view.clip_id}  {view.state}",
        f"path      {view.path}",
        f"task      {view.task or '(none named)'}",
        f"duration  {view.duration_s:.1f} s" if view.duration_s is not None else "duration  -",
        f"quality   {view.quality:.2f}  {view.hands}" if view.quality is not None else "quality   (not labeled yet)",
        f"reason    {view.reason or '-'}",
        f"cid       {view.cid or '(not pinned yet)'}",
        f"tx        {view.tx_hash or '(not submitted yet)'}" + (f"  batch {view.batch}" if view.batch is not None else ""),
        f"reward    {view.reward_tokens} KNACK" if view.reward_tokens is not None else "reward    (not settled yet)",
        f"tries     {view.attempts}",
        "",
        json.dumps(shown, indent=2, default=str),
    ]

"""`knack discard`: an operator throws away a clip the device has not shared yet (a bad take, a person who
walked into frame). Pinned, submitted and settled clips are shared by CID or on chain and are kept.

Crash-safe in three steps: the outbox row is marked `discarded` (so nothing picks the clip up again), the
directory is renamed out of the clips listing and removed, then the row goes. `sweep_discarded` finishes
whatever a crash interrupted."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from collector.bundle import DISCARD_PREFIX, MANIFEST
from storage.outbox.db import DISCARDABLE, Outbox


class DiscardError(Exception):
    pass


def discard(outbox: Outbox, clips_dir: Path, clip_id: str) -> None:
    if not clip_id or "/" in clip_id or "\\" in clip_id or clip_id.startswith("."):
        raise DiscardError(f"{clip_id!r} is not a clip id")
    clip = clips_dir / clip_id
    entry = outbox.get(clip_id)
    if entry is None and not (clip / MANIFEST).is_file():
        raise DiscardError(f"no clip {clip_id} in {clips_dir} or in the outbox")
    if entry is None:
        outbox.record(clip_id, clip)
    elif entry.state == "discarded":  # an earlier discard was cut short: finish it
        _remove(outbox, clips_dir, clip_id)
        return
    if not outbox.mark_discarded(clip_id):
        state = outbox.get(clip_id).state
        raise DiscardError(
            f"clip {clip_id} is {state}: it is shared already (by CID or on chain), so it is kept; only {', '.join(DISCARDABLE)} clips can be discarded"
        )
    _remove(outbox, clips_dir, clip_id)


def sweep_discarded(outbox: Outbox, clips_dir: Path) -> int:
    """Finishes discards a crash cut short; returns how many."""
    pending = outbox.discarded()
    for entry in pending:
        _remove(outbox, clips_dir, entry.clip_id)
    return len(pending)


def _remove(outbox: Outbox, clips_dir: Path, clip_id: str) -> None:
    clip, trash = clips_dir / clip_id, clips_dir / f"{DISCARD_PREFIX}{clip_id}"
    if clip.is_dir():
        os.replace(clip, trash)  # atomic: the clip leaves the listing (hidden names are skipped) at once
    if trash.exists():
        shutil.rmtree(trash)
    outbox.forget(clip_id)

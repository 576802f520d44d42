"""Rebuilding a damaged or lost outbox from what does not depend on it: the clips on disk (their signed
decisions), the content store (what is pinned) and the chain (which batches hold which CIDs, and their
settlements). The damaged file is kept beside the new one, never deleted."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from storage.content.ipfs import ContentStore, StoreUnavailable
from storage.content.unixfs import UnixfsError, add_path
from storage.ledger.base import SubmittedBatch
from storage.outbox.db import Outbox
from storage.outbox.pinner import enqueue_all

log = logging.getLogger("knack.storage")


@dataclass
class Rebuilt:
    outbox: Outbox
    kept: list[Path] = field(default_factory=list)  # the damaged files, moved aside
    counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def set_aside(path: Path) -> list[Path]:
    """Moves the outbox file and its WAL and shared-memory files to `<name>.damaged-<time>`."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    kept = []
    for suffix in ("", "-wal", "-shm"):
        old = Path(f"{path}{suffix}")
        if old.exists():
            new = old.with_name(f"{path.name}.damaged-{stamp}{suffix}")
            old.rename(new)
            kept.append(new)
    return kept


def rebuild(path: Path, clips: list[Path], store: ContentStore | None, batches: list[SubmittedBatch] | None) -> Rebuilt:
    """A new outbox at `path` (the old file set aside): every labeled clip on disk by its signed decision;
    an accepted one whose CID the store holds is pinned, one whose CID a batch of this device holds is
    submitted (its settlement is read by the next chain round). `store` or `batches` None: not known, said
    in the notes (a clip that was submitted then looks pinned, and is submitted again: the network pays a CID
    once, so that costs a rejection, never a second payment)."""
    kept = set_aside(path)
    outbox = Outbox(path)
    result = Rebuilt(outbox, kept)
    enqueue_all(outbox, clips)
    in_batch: dict[bytes, tuple[int, int]] = {}
    for batch in batches or []:
        for index, digest in enumerate(batch.digests):
            in_batch.setdefault(bytes(digest), (batch.batch_id, index))
    if store is None:
        result.notes.append("the content store could not be read: accepted clips not found on chain stay accepted and are pinned again")
    if batches is None:
        result.notes.append("the chain could not be read: pinned clips are submitted again (a CID is paid once)")
    for entry in outbox.due("accepted", now=float("inf")):
        try:
            cid = add_path(Path(entry.path)).cid
        except (UnixfsError, OSError) as exc:
            result.notes.append(f"clip {entry.clip_id}: its CID cannot be computed ({exc}); it stays accepted")
            continue
        where = in_batch.get(cid.digest)
        if where is not None:
            outbox.restore(entry.clip_id, str(cid), "submitted", *where)
            continue
        try:
            pinned = store is not None and store.is_pinned(cid)
        except StoreUnavailable as exc:
            result.notes.append(f"the content store stopped answering ({exc})")
            store = None
            pinned = False
        if pinned:
            outbox.restore(entry.clip_id, str(cid), "pinned")
    result.counts = {state: n for state, n in outbox.counts().items() if n}
    return result

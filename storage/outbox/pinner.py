"""Moves accepted clips from the outbox into the content store: accepted -> pinned, exactly once."""

from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from collector.bundle import MANIFEST, verify_bundle
from storage.content.cid import Cid
from storage.content.ipfs import CidMismatch, ContentStore, StoreUnavailable
from storage.outbox.db import Outbox
from storage.outbox.rounds import Rounds

log = logging.getLogger("knack.storage")


def enqueue(outbox: Outbox, clip: Path) -> str | None:
    """Moves a labeled clip bundle into accepted or rejected from its signed manifest (idempotent; a
    clip the outbox has not seen yet enters as recorded first); returns that state, or None when the
    clip has no decision yet."""
    try:
        manifest = json.loads((clip / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    decision = manifest.get("decision")
    if not decision:
        return None
    accepted = bool(decision.get("accepted"))
    outbox.record(manifest["clip_id"], clip, "recorded")
    outbox.decide(manifest["clip_id"], accepted, "" if accepted else decision.get("summary", ""))
    return "accepted" if accepted else "rejected"


def enqueue_all(outbox: Outbox, clips: list[Path]) -> int:
    """Every labeled clip on disk that the outbox has not seen decided (after a crash between labeling
    and the outbox, a clip labeled again with `knack label`, or clips labeled before the outbox
    existed); returns how many moved."""
    known = {e.clip_id: e.state for e in [*outbox.entries(), *outbox.discarded()]}
    moved = 0
    for clip in clips:
        if known.get(clip.name, "recorded") in ("recorded", "labeled") and enqueue(outbox, clip):
            moved += 1
    return moved


class PinDeferred(Exception):
    """`prepare` cannot ready the clip yet (its device does not know its network): it waits, with backoff."""


@dataclass(frozen=True)
class PinResult:
    clip_id: str
    cid: str | None
    error: str = ""


def pin_due(outbox: Outbox, store: ContentStore, now: float | None = None, remote=None, prepare=None) -> list[PinResult]:
    """Pins every accepted clip that is due (and, with `remote`, has a pinning service keep a copy).
    A store that is down stops the round (the rest would fail the same way) and schedules a retry; a
    clip whose CID disagrees, or that a service refuses, stops until `knack retry`. `prepare(path)`
    runs first and says whether it rewrote the clip (its manifest re-signed for the network), so a CID
    recorded by an earlier attempt no longer holds."""
    from storage.content.remote_pin import RemotePinError

    results = []
    for entry in outbox.due("accepted", now):
        path = Path(entry.path)
        if not (path / MANIFEST).is_file():
            error = f"clip directory {path} is gone: nothing to pin"
            outbox.failed(entry.clip_id, error, retry=False)
            results.append(PinResult(entry.clip_id, entry.cid, error))
            continue
        try:
            changed = prepare(path) if prepare is not None else False
            # What is pinned is paid for and kept for years: only a bundle that verifies (every file its own,
            # as signed; no link out of it) is added, so a clip changed on disk since labeling stops here.
            check = verify_bundle(path)
            if not check.ok:
                raise ValueError(f"clip {entry.clip_id} does not verify, so it is not pinned: {'; '.join(check.problems[:3])}")
            cid = store.add(path, Cid.parse(entry.cid) if entry.cid and not changed else None)
            outbox.set_cid(entry.clip_id, str(cid))
            if remote is not None:
                remote.pin(str(cid), entry.clip_id)
        except PinDeferred as exc:
            wait = outbox.failed(entry.clip_id, str(exc))
            log.info("clip %s waits %.0f s: %s", entry.clip_id, wait, exc)
            results.append(PinResult(entry.clip_id, entry.cid, str(exc)))
            continue
        except StoreUnavailable as exc:
            wait = outbox.failed(entry.clip_id, str(exc))
            log.warning("clip %s not pinned, retry in %.0f s: %s", entry.clip_id, wait, exc)
            results.append(PinResult(entry.clip_id, entry.cid, str(exc)))
            break
        except (CidMismatch, RemotePinError, ValueError) as exc:  # ValueError: a clip that no longer verifies
            outbox.failed(entry.clip_id, str(exc), retry=False)
            log.error("clip %s not pinned: %s", entry.clip_id, exc)
            results.append(PinResult(entry.clip_id, entry.cid, str(exc)))
            continue
        except (OSError, sqlite3.Error) as exc:  # a full disk (SQLite says "database or disk is full"), an unreadable file
            wait = outbox.failed(entry.clip_id, f"{getattr(exc, 'strerror', None) or exc} while pinning")
            log.warning("clip %s not pinned, retry in %.0f s: %s", entry.clip_id, wait, exc)
            results.append(PinResult(entry.clip_id, entry.cid, str(exc)))
            continue
        outbox.advance(entry.clip_id, str(cid), "accepted", "pinned")
        results.append(PinResult(entry.clip_id, str(cid)))
    return results


class Pinner(Rounds):
    """Pins what is due every few seconds and at once when woken, in a thread of its own."""

    name = "knack-pinner"

    def __init__(self, outbox: Outbox, store: ContentStore, interval: float = 5.0, on_pinned=None, remote=None, prepare=None):
        super().__init__(interval)
        self.outbox, self.store, self.on_pinned, self.remote, self.prepare = outbox, store, on_pinned, remote, prepare

    def round(self) -> None:
        for result in pin_due(self.outbox, self.store, remote=self.remote, prepare=self.prepare):
            if self.on_pinned:
                self.on_pinned(result)

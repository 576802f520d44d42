"""The outbox (DESIGN.md): one SQLite row per clip, driving it from its label decision to settled.

    recorded -> labeled -> rejected | accepted -> pinned -> submitted -> settled

Every transition is a single conditional UPDATE keyed by clip id (and CID once known), so doing one
twice, or again after a crash, changes nothing. Failed steps are retried with exponential backoff and
jitter, and the last error is kept in words for the operator."""
from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from storage.sqlite import open_wal

STATES = ("recorded", "labeled", "rejected", "accepted", "pinned", "submitted", "settled")
PENDING = ("accepted", "pinned", "submitted")
BACKOFF_BASE_S = 5.0
BACKOFF_MAX_S = 3600.0
NEVER = float("inf")


@dataclass(frozen=True)
class Entry:
    clip_id: str
    path: str
    state: str
    cid: str | None
    reason: str
    attempts: int
    next_try: float
    last_error: str
    created: float
    updated: float


def backoff(attempts: int, rng: random.Random | None = None) -> float:
    """Seconds before try number `attempts` + 1: doubling from 5 s up to an hour, with full jitter so a
    fleet of devices coming back online does not retry in step."""
    ceiling = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** max(0, attempts - 1))
    return (rng or random).uniform(ceiling / 2, ceiling)


class Outbox:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = open_wal(self.path)
        self._db.execute(
            """CREATE TABLE IF NOT EXISTS clips (
                clip_id TEXT PRIMARY KEY,
                path TEXT NOT NULL,
                state TEXT NOT NULL,
                cid TEXT,
                reason TEXT NOT NULL DEFAULT '',
                attempts INTEGER NOT NULL DEFAULT 0,
                next_try REAL NOT NULL DEFAULT 0,
                last_error TEXT NOT NULL DEFAULT '',
                created REAL NOT NULL,
                updated REAL NOT NULL
            )"""
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS clips_due ON clips (state, next_try)")

    def close(self) -> None:
        self._db.close()

    def _exec(self, sql: str, args: tuple = ()) -> int:
        with self._lock:
            return self._db.execute(sql, args).rowcount

    def _rows(self, sql: str, args: tuple = ()) -> list[Entry]:
        with self._lock:
            return [Entry(*row) for row in self._db.execute(f"SELECT clip_id, path, state, cid, reason, attempts, next_try, last_error, created, updated FROM clips {sql}", args)]

    def record(self, clip_id: str, path: str | Path, state: str = "recorded", reason: str = "") -> bool:
        """Adds a clip (idempotent: a clip already known keeps its row and state). True if it was new."""
        if state not in ("recorded", "labeled", "accepted", "rejected"):
            raise ValueError(f"a clip enters the outbox as recorded, labeled, accepted or rejected, not {state}")
        now = time.time()
        return self._exec("INSERT OR IGNORE INTO clips (clip_id, path, state, reason, created, updated) VALUES (?, ?, ?, ?, ?, ?)", (clip_id, str(path), state, reason, now, now)) == 1

    def decide(self, clip_id: str, accepted: bool, reason: str = "") -> bool:
        """recorded/labeled -> accepted | rejected; a clip already past that point is left alone."""
        state = "accepted" if accepted else "rejected"
        return self._exec(
            "UPDATE clips SET state = ?, reason = ?, updated = ?, next_try = 0 WHERE clip_id = ? AND state IN ('recorded', 'labeled')",
            (state, reason, time.time(), clip_id),
        ) == 1

    def set_cid(self, clip_id: str, cid: str) -> None:
        """Keys the clip by its content id. A clip keeps the first CID it was given: a different one later
        means its files changed after it was accepted, which is an error for the caller."""
        self._exec("UPDATE clips SET cid = ?, updated = ? WHERE clip_id = ? AND cid IS NULL", (cid, time.time(), clip_id))

    def advance(self, clip_id: str, cid: str, from_state: str, to_state: str) -> bool:
        """One step forward, only from `from_state` and only for this CID; repeating it is a no-op."""
        if STATES.index(to_state) <= STATES.index(from_state):
            raise ValueError(f"{from_state} -> {to_state} is not a step forward")
        return self._exec(
            "UPDATE clips SET state = ?, attempts = 0, next_try = 0, last_error = '', updated = ? WHERE clip_id = ? AND cid = ? AND state = ?",
            (to_state, time.time(), clip_id, cid, from_state),
        ) == 1

    def failed(self, clip_id: str, error: str, retry: bool = True, rng: random.Random | None = None) -> float:
        """Keeps the error in words and schedules the next try (never, for a fault retrying cannot fix)."""
        with self._lock:
            row = self._db.execute("SELECT attempts FROM clips WHERE clip_id = ?", (clip_id,)).fetchone()
            attempts = (row[0] if row else 0) + 1
            wait = backoff(attempts, rng) if retry else NEVER
            self._db.execute(
                "UPDATE clips SET attempts = ?, next_try = ?, last_error = ?, updated = ? WHERE clip_id = ?",
                (attempts, time.time() + wait, error, time.time(), clip_id),
            )
        return wait

    def retry(self, clip_ids: list[str] | None = None) -> int:
        """Makes failed or waiting clips due now (all pending ones when no ids are given)."""
        waiting = "state IN ('accepted', 'pinned', 'submitted') AND next_try > 0"
        if clip_ids:
            marks = ",".join("?" * len(clip_ids))
            return self._exec(f"UPDATE clips SET next_try = 0 WHERE clip_id IN ({marks}) AND {waiting}", tuple(clip_ids))
        return self._exec(f"UPDATE clips SET next_try = 0 WHERE {waiting}")

    def due(self, state: str, now: float | None = None) -> list[Entry]:
        return self._rows("WHERE state = ? AND next_try <= ? ORDER BY created", (state, time.time() if now is None else now))

    def get(self, clip_id: str) -> Entry | None:
        rows = self._rows("WHERE clip_id = ?", (clip_id,))
        return rows[0] if rows else None

    def entries(self) -> list[Entry]:
        return self._rows("ORDER BY created")

    def counts(self) -> dict[str, int]:
        with self._lock:
            found = dict(self._db.execute("SELECT state, COUNT(*) FROM clips GROUP BY state").fetchall())
        return {state: found.get(state, 0) for state in STATES}

    def oldest_pending(self) -> Entry | None:
        rows = self._rows("WHERE state IN ('accepted', 'pinned', 'submitted') ORDER BY created LIMIT 1")
        return rows[0] if rows else None

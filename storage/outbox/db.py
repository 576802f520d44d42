"""The outbox (DESIGN.md): one SQLite row per clip, driving it from its label decision to settled.

    recorded -> labeled -> rejected | accepted -> pinned -> submitted -> settled

Every transition is a single conditional UPDATE keyed by clip id (and CID once known), so doing one
twice, or again after a crash, changes nothing. Failed steps are retried with exponential backoff and
jitter, and the last error is kept in words for the operator."""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from storage.outbox.states import DISCARDABLE, PENDING, STATES
from storage.sqlite import open_wal

__all__ = ["DISCARDABLE", "PENDING", "STATES", "BACKOFF_BASE_S", "BACKOFF_MAX_S", "NEVER", "Entry", "Outbox", "OutboxDamaged", "backoff"]
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


class OutboxDamaged(Exception):
    """The outbox file cannot be read as one: said in one line, with the way out."""

    def __init__(self, path: Path, problem: str):
        self.path, self.problem = path, problem
        super().__init__(
            f"the outbox {path} is damaged ({problem}); `knack outbox rebuild` rebuilds it from the clips on disk, "
            "the content store and the chain, and keeps the damaged file beside it"
        )


class Outbox:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self._open()
        except sqlite3.DatabaseError as exc:  # not a database, a torn page, a malformed schema
            if getattr(self, "_db", None) is not None:
                self._db.close()
            raise OutboxDamaged(self.path, str(exc)) from None

    def _open(self) -> None:
        self._db = None
        self._db = open_wal(self.path)
        # Checked on open, so damage is found here and said once, not as a traceback from some later step.
        problem = self._db.execute("PRAGMA quick_check").fetchone()[0]
        if problem != "ok":
            raise sqlite3.DatabaseError(problem)
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
        # The chain steps (added after the first schema: older outboxes gain the columns on open).
        have = {row[1] for row in self._db.execute("PRAGMA table_info(clips)")}
        for column, kind in (("tx_hash", "TEXT"), ("batch_id", "INTEGER"), ("batch_index", "INTEGER"), ("reward", "TEXT"), ("chain_reason", "TEXT")):
            if column not in have:
                self._db.execute(f"ALTER TABLE clips ADD COLUMN {column} {kind}")
        # A signed transaction is kept before it is sent: after a crash or a dropped connection the same
        # transaction (same nonce) is sent again, so a batch can never be submitted twice.
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS txs (tx_hash TEXT PRIMARY KEY, raw BLOB NOT NULL, kind TEXT NOT NULL, clip_ids TEXT NOT NULL, created REAL NOT NULL)"
        )

    def close(self) -> None:
        self._db.close()

    def _exec(self, sql: str, args: tuple = ()) -> int:
        with self._lock:
            return self._db.execute(sql, args).rowcount

    def _rows(self, sql: str, args: tuple = ()) -> list[Entry]:
        with self._lock:
            return [
                Entry(*row)
                for row in self._db.execute(
                    f"SELECT clip_id, path, state, cid, reason, attempts, next_try, last_error, created, updated FROM clips {sql}", args
                )
            ]

    def record(self, clip_id: str, path: str | Path, state: str = "recorded", reason: str = "") -> bool:
        """Adds a clip (idempotent: a clip already known keeps its row and state). True if it was new."""
        if state not in ("recorded", "labeled", "accepted", "rejected"):
            raise ValueError(f"a clip enters the outbox as recorded, labeled, accepted or rejected, not {state}")
        now = time.time()
        return (
            self._exec(
                "INSERT OR IGNORE INTO clips (clip_id, path, state, reason, created, updated) VALUES (?, ?, ?, ?, ?, ?)",
                (clip_id, str(path), state, reason, now, now),
            )
            == 1
        )

    def decide(self, clip_id: str, accepted: bool, reason: str = "") -> bool:
        """recorded/labeled -> accepted | rejected; a clip already past that point is left alone."""
        state = "accepted" if accepted else "rejected"
        return (
            self._exec(
                "UPDATE clips SET state = ?, reason = ?, updated = ?, next_try = 0 WHERE clip_id = ? AND state IN ('recorded', 'labeled')",
                (state, reason, time.time(), clip_id),
            )
            == 1
        )

    def set_cid(self, clip_id: str, cid: str) -> None:
        """Keys the clip by its content id. A clip keeps the first CID it was given: a different one later
        means its files changed after it was accepted, which is an error for the caller."""
        self._exec("UPDATE clips SET cid = ?, updated = ? WHERE clip_id = ? AND cid IS NULL", (cid, time.time(), clip_id))

    def advance(self, clip_id: str, cid: str, from_state: str, to_state: str) -> bool:
        """One step forward, only from `from_state` and only for this CID; repeating it is a no-op."""
        if STATES.index(to_state) <= STATES.index(from_state):
            raise ValueError(f"{from_state} -> {to_state} is not a step forward")
        return (
            self._exec(
                "UPDATE clips SET state = ?, attempts = 0, next_try = 0, last_error = '', updated = ? WHERE clip_id = ? AND cid = ? AND state = ?",
                (to_state, time.time(), clip_id, cid, from_state),
            )
            == 1
        )

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
        """Clips in `state` whose next try has come and that wait on no signed transaction."""
        return self._rows("WHERE state = ? AND next_try <= ? AND tx_hash IS NULL ORDER BY created", (state, time.time() if now is None else now))

    def get(self, clip_id: str) -> Entry | None:
        rows = self._rows("WHERE clip_id = ?", (clip_id,))
        return rows[0] if rows else None

    def entries(self) -> list[Entry]:
        return self._rows("WHERE state != 'discarded' ORDER BY created")

    def chain_record(self, clip_id: str) -> dict | None:
        """What the chain steps noted for a clip: its transaction, batch, index, reward (wei) and the
        validator's rejection reason; None for an unknown clip."""
        with self._lock:
            row = self._db.execute("SELECT tx_hash, batch_id, batch_index, reward, chain_reason FROM clips WHERE clip_id = ?", (clip_id,)).fetchone()
        return None if row is None else dict(zip(("tx_hash", "batch_id", "batch_index", "reward", "chain_reason"), row))

    # -- discarding (the operator's choice, before a clip is shared) -----------------------------------

    def mark_discarded(self, clip_id: str) -> bool:
        """recorded/labeled/accepted/rejected -> discarded, in one conditional UPDATE so a clip the pinner
        has just pinned is never discarded; the row goes with `forget` once the files are gone."""
        marks = ",".join("?" * len(DISCARDABLE))
        return (
            self._exec(f"UPDATE clips SET state = 'discarded', updated = ? WHERE clip_id = ? AND state IN ({marks})", (time.time(), clip_id, *DISCARDABLE)) == 1
        )

    def discarded(self) -> list[Entry]:
        return self._rows("WHERE state = 'discarded'")

    def forget(self, clip_id: str) -> None:
        self._exec("DELETE FROM clips WHERE clip_id = ? AND state = 'discarded'", (clip_id,))

    def counts(self) -> dict[str, int]:
        with self._lock:
            found = dict(self._db.execute("SELECT state, COUNT(*) FROM clips GROUP BY state").fetchall())
        return {state: found.get(state, 0) for state in STATES}

    # -- the chain steps ------------------------------------------------------------------------------

    def stage_tx(self, tx_hash: str, raw: bytes, kind: str, clip_ids: list[str]) -> None:
        """Records a signed transaction for these clips before it is sent (one SQLite transaction)."""
        import json

        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.execute(
                    "INSERT OR IGNORE INTO txs (tx_hash, raw, kind, clip_ids, created) VALUES (?, ?, ?, ?, ?)",
                    (tx_hash, raw, kind, json.dumps(clip_ids), time.time()),
                )
                self._db.executemany("UPDATE clips SET tx_hash = ?, updated = ? WHERE clip_id = ?", [(tx_hash, time.time(), c) for c in clip_ids])
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def staged_txs(self, kind: str) -> list[tuple[str, bytes, list[str]]]:
        import json

        with self._lock:
            rows = self._db.execute("SELECT tx_hash, raw, clip_ids FROM txs WHERE kind = ? ORDER BY created", (kind,)).fetchall()
        return [(h, bytes(raw), json.loads(ids)) for h, raw, ids in rows]

    def drop_tx(self, tx_hash: str) -> None:
        """Forgets a transaction that reverted or was replaced; its clips can be sent again."""
        with self._lock:
            self._db.execute("DELETE FROM txs WHERE tx_hash = ?", (tx_hash,))
            self._db.execute("UPDATE clips SET tx_hash = NULL WHERE tx_hash = ?", (tx_hash,))

    def submitted(self, tx_hash: str, batch_id: int, clip_ids: list[str]) -> None:
        """pinned -> submitted for the clips of a mined batch, each with its index in the batch."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                for index, clip_id in enumerate(clip_ids):
                    self._db.execute(
                        "UPDATE clips SET state = 'submitted', batch_id = ?, batch_index = ?, attempts = 0, next_try = 0, last_error = '', updated = ? WHERE clip_id = ? AND state = 'pinned'",
                        (batch_id, index, time.time(), clip_id),
                    )
                self._db.execute("DELETE FROM txs WHERE tx_hash = ?", (tx_hash,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def settled(self, batch_id: int, outcomes: dict[int, tuple[bool, int, str]]) -> int:
        """submitted -> settled for a batch the validator settled: per index (accepted, reward, reason)."""
        changed = 0
        with self._lock:
            for index, (accepted, reward, reason) in outcomes.items():
                changed += self._db.execute(
                    "UPDATE clips SET state = 'settled', reward = ?, chain_reason = ?, updated = ? WHERE batch_id = ? AND batch_index = ? AND state = 'submitted'",
                    (str(reward), "" if accepted else reason, time.time(), batch_id, index),
                ).rowcount
        return changed

    def restore(self, clip_id: str, cid: str, state: str, batch_id: int | None = None, batch_index: int | None = None) -> bool:
        """For a rebuild only: a known clip (entered as accepted) set to where the content store and the chain
        say it is: pinned, or submitted in batch `batch_id` at `batch_index`. True when it changed."""
        if state not in ("pinned", "submitted"):
            raise ValueError(f"a rebuilt clip is restored as pinned or submitted, not {state}")
        return (
            self._exec(
                "UPDATE clips SET state = ?, cid = ?, batch_id = ?, batch_index = ?, updated = ? WHERE clip_id = ? AND state = 'accepted'",
                (state, cid, batch_id, batch_index, time.time(), clip_id),
            )
            == 1
        )

    def unsettled_batches(self) -> list[int]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT DISTINCT batch_id FROM clips WHERE state = 'submitted' ORDER BY batch_id")]

    def oldest_pending(self) -> Entry | None:
        rows = self._rows("WHERE state IN ('accepted', 'pinned', 'submitted') ORDER BY created LIMIT 1")
        return rows[0] if rows else None

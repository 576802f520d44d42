"""The embedded block store (the default, no daemon): blocks by CID in one SQLite file, pins, garbage
collection of unpinned blocks, and a hash check of every block read, so a flipped bit on disk is
reported and never served."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

from storage.content.cid import DAG_PB, Cid
from storage.content.unixfs import decode_links
from storage.sqlite import open_wal


class BlockError(Exception):
    """A block that is missing, or whose bytes no longer match its CID."""


class BlockStore:
    """SQLite (WAL) holds the blocks: each put is one transaction, so a crash keeps whole blocks only."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = open_wal(self.path)
        self._db.execute("CREATE TABLE IF NOT EXISTS blocks (cid BLOB PRIMARY KEY, data BLOB NOT NULL) WITHOUT ROWID")
        self._db.execute("CREATE TABLE IF NOT EXISTS pins (cid BLOB PRIMARY KEY, name TEXT NOT NULL DEFAULT '') WITHOUT ROWID")

    def close(self) -> None:
        self._db.close()

    def put(self, cid: Cid, block: bytes) -> None:
        if not cid.matches(block):
            raise BlockError(f"refused block {cid}: its bytes do not hash to its CID")
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO blocks (cid, data) VALUES (?, ?)", (cid.bytes, block))

    def put_many(self, blocks: list[tuple[Cid, bytes]]) -> None:
        """Several blocks in one transaction (one fsync), for bulk adds."""
        for cid, block in blocks:
            if not cid.matches(block):
                raise BlockError(f"refused block {cid}: its bytes do not hash to its CID")
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany("INSERT OR IGNORE INTO blocks (cid, data) VALUES (?, ?)", [(c.bytes, b) for c, b in blocks])
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def has(self, cid: Cid) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM blocks WHERE cid = ?", (cid.bytes,)).fetchone() is not None

    def get(self, cid: Cid) -> bytes:
        with self._lock:
            row = self._db.execute("SELECT data FROM blocks WHERE cid = ?", (cid.bytes,)).fetchone()
        if row is None:
            raise BlockError(f"block {cid} is not in the store")
        block = bytes(row[0])
        if not cid.matches(block):
            raise BlockError(f"block {cid} is corrupt on disk: its bytes no longer hash to its CID (not served; re-add the clip)")
        return block

    def walk(self, root: Cid) -> Iterator[tuple[Cid, bytes]]:
        """Every block of the DAG under `root`, depth first in link order (the order of `ipfs dag export`),
        each once, each hash-checked."""
        seen: set[bytes] = set()
        stack = [root]
        while stack:
            cid = stack.pop()
            if cid.bytes in seen:
                continue
            seen.add(cid.bytes)
            block = self.get(cid)
            yield cid, block
            if cid.codec == DAG_PB:
                stack.extend(reversed(decode_links(block)))

    def pin(self, root: Cid, name: str = "") -> None:
        """Pins a whole DAG (recursively); every block of it must be present and intact first."""
        for _ in self.walk(root):
            pass
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO pins (cid, name) VALUES (?, ?)", (root.bytes, name))

    def unpin(self, root: Cid) -> None:
        with self._lock:
            self._db.execute("DELETE FROM pins WHERE cid = ?", (root.bytes,))

    def pins(self) -> list[tuple[Cid, str]]:
        with self._lock:
            rows = self._db.execute("SELECT cid, name FROM pins").fetchall()
        return [(Cid.from_bytes(bytes(c)), n) for c, n in rows]

    def is_pinned(self, root: Cid) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM pins WHERE cid = ?", (root.bytes,)).fetchone() is not None

    def gc(self) -> int:
        """Removes every block no pin reaches; returns how many went."""
        keep: set[bytes] = set()
        for root, _ in self.pins():
            keep.update(cid.bytes for cid, _ in self.walk(root))
        with self._lock:
            all_cids = [bytes(r[0]) for r in self._db.execute("SELECT cid FROM blocks").fetchall()]
            doomed = [(c,) for c in all_cids if c not in keep]
            self._db.execute("BEGIN")
            self._db.executemany("DELETE FROM blocks WHERE cid = ?", doomed)
            self._db.execute("COMMIT")
        return len(doomed)

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM blocks").fetchone()[0]

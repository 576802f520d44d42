"""The one way storage opens SQLite: WAL journal and full sync, so a committed row survives a power
cut and a kill -9 leaves the last committed state."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def open_wal(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Autocommit (isolation_level=None): every statement is its own transaction unless BEGIN is said.
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    return db

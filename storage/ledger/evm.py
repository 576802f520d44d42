"""The embedded chain: an in-process EVM (py-evm, through eth-tester and web3.py) whose state lives in a
SQLite file in the data directory, so a later process sees the same contracts and balances.

py-evm keeps every trie node and block in a key-value database; here that database is SQLite, written
in one transaction per mined block, so a crash leaves the chain at its last whole block."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from eth.db.atomic import AtomicDB
from eth.db.backends.base import BaseDB

CHAIN_ID = 131277322940537  # eth-tester's chain id, kept so tools that know eth-tester recognise it


class SqliteKV(BaseDB):
    """py-evm's key-value store in SQLite. Writes collect in an open transaction until `commit`."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("CREATE TABLE IF NOT EXISTS kv (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID")
        self._db.commit()
        self._lock = threading.RLock()

    def __getitem__(self, key: bytes) -> bytes:
        with self._lock:
            row = self._db.execute("SELECT v FROM kv WHERE k = ?", (key,)).fetchone()
        if row is None:
            raise KeyError(key)
        return bytes(row[0])

    def __setitem__(self, key: bytes, value: bytes) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO kv (k, v) VALUES (?, ?)", (key, value))

    def __delitem__(self, key: bytes) -> None:
        with self._lock:
            if self._db.execute("DELETE FROM kv WHERE k = ?", (key,)).rowcount == 0:
                raise KeyError(key)

    def _exists(self, key: bytes) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM kv WHERE k = ?", (key,)).fetchone() is not None

    def commit(self) -> None:
        with self._lock:
            self._db.commit()

    def rollback(self) -> None:
        with self._lock:
            self._db.rollback()

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _chain_class():
    from eth.chains.base import MiningChain
    from eth.vm.forks import PragueVM
    from toolz import assoc

    class KnackDevChain(MiningChain):
        """eth-tester's post-merge test chain (Prague, constant gas limit), with a persistent database."""

        chain_id = CHAIN_ID
        vm_configuration = ((0, PragueVM),)

        def create_header_from_parent(self, parent_header, **header_params):
            return super().create_header_from_parent(parent_header, **assoc(header_params, "gas_limit", parent_header.gas_limit))

        def get_transaction_builder(self):
            return super().get_vm().get_transaction_builder()

    return KnackDevChain


def open_backend(path: Path):
    """An eth-tester PyEVMBackend on the chain stored at `path` (created with eth-tester's funded test
    accounts at genesis the first time). Returns (backend, kv); commit `kv` after each mined block."""
    from eth_tester.backends.pyevm.main import (
        PyEVMBackend,
        generate_genesis_state_for_keys,
        get_default_account_keys,
        get_default_genesis_params,
    )

    kv = SqliteKV(path)
    db = AtomicDB(kv)
    chain_class = _chain_class()
    keys = get_default_account_keys(quantity=10)
    try:
        from eth.db.chain import ChainDB

        ChainDB(db).get_canonical_head()
        chain = chain_class(db)
    except Exception:  # no head yet: a new chain
        chain = chain_class.from_genesis(db, get_default_genesis_params(), generate_genesis_state_for_keys(keys))
        kv.commit()

    class PersistentBackend(PyEVMBackend):
        def __init__(self):  # the chain is built above; PyEVMBackend's own __init__ would make a fresh one
            self.account_keys = keys
            self.chain = chain

        def mine_blocks(self, num_blocks=1, coinbase=None):
            try:
                mined = super().mine_blocks(num_blocks, coinbase) if coinbase is not None else super().mine_blocks(num_blocks)
            except BaseException:
                kv.rollback()
                raise
            kv.commit()
            return mined

    return PersistentBackend(), kv

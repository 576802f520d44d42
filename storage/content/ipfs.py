"""The content-store seam: where accepted clips are pinned. The embedded block store is the default;
a real IPFS node over its RPC API (ipfshttpclient) is the other implementation. Both must end with
the clip pinned under the CID the device computed itself, or say why not."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import BinaryIO, Protocol

from storage.content.blockstore import BlockStore
from storage.content.car import write_car
from storage.content.cid import Cid, CidError
from storage.content.unixfs import add_path

log = logging.getLogger("knack.storage")
_BATCH_BYTES = 16 << 20


def _why(exc: BaseException) -> str:
    """The cause a person can act on ("Connection refused", "timed out"), not urllib3's nested repr."""
    import re

    text = str(exc)
    if found := re.search(r"\[Errno -?\d+\] ([^'\")]+)", text):
        return found.group(1).strip()
    if "timed out" in text.lower() or "timeout" in type(exc).__name__.lower():
        return "timed out"
    first = text.splitlines()[0] if text else type(exc).__name__
    return first if len(first) <= 160 else first[:157] + "..."


class StoreUnavailable(Exception):
    """The store cannot be reached now (a daemon down, a connection dropped): try again later."""


class CidMismatch(Exception):
    """The store computed another CID than the device did: this clip stops here until someone looks."""


class ContentStore(Protocol):
    name: str

    def add(self, path: Path, expected: Cid | None = None) -> Cid:
        """Adds and pins a clip directory; returns its root CID, equal to `expected` when given."""
        ...

    def is_pinned(self, cid: Cid) -> bool: ...

    def get(self, cid: Cid) -> bytes:
        """One block, checked against its CID."""
        ...


class EmbeddedStore:
    """The device's own IPFS block store: the same DAG kubo would make, kept in SQLite."""

    name = "embedded"

    def __init__(self, path: str | Path):
        self.blocks = BlockStore(path)

    def add(self, path: Path, expected: Cid | None = None) -> Cid:
        batch: list[tuple[Cid, bytes]] = []
        size = 0

        def sink(cid: Cid, block: bytes) -> None:
            nonlocal size
            batch.append((cid, block))
            size += len(block)
            if size >= _BATCH_BYTES:
                flush()

        def flush() -> None:
            nonlocal size
            self.blocks.put_many(batch)
            batch.clear()
            size = 0

        root = add_path(path, sink).cid
        flush()
        if expected is not None and root != expected:
            raise CidMismatch(f"{path} now has CID {root}, but the outbox recorded {expected}: its files changed after it was accepted")
        self.blocks.pin(root, Path(path).name)
        return root

    def is_pinned(self, cid: Cid) -> bool:
        return self.blocks.is_pinned(cid)

    def get(self, cid: Cid) -> bytes:
        return self.blocks.get(cid)

    def export_car(self, root: Cid, out: BinaryIO) -> int:
        return write_car(out, root, self.blocks.walk(root))

    def close(self) -> None:
        self.blocks.close()


class DaemonStore:
    """A real IPFS node (kubo, or js-ipfs, which serves the same RPC API) through ipfshttpclient."""

    name = "ipfs daemon"

    def __init__(self, api: str, timeout: float = 120.0):
        import ipfshttpclient

        self.api = api
        # Not ipfshttpclient.connect(): it checks the daemon's version against a range that ends before
        # every kubo of the last years (and js-ipfs) and refuses them. The client itself speaks the same
        # /api/v0 calls, so it is constructed directly.
        self.client = ipfshttpclient.Client(api, timeout=timeout)

    def _call(self, what: str, fn, *args, **kwargs):
        import ipfshttpclient.exceptions as errors

        try:
            return fn(*args, **kwargs)
        except (errors.ConnectionError, errors.TimeoutError, errors.ProtocolError) as exc:
            raise StoreUnavailable(f"IPFS daemon at {self.api} is not reachable ({what}): {_why(exc)}") from None
        except errors.Error as exc:
            raise StoreUnavailable(f"IPFS daemon at {self.api} refused {what}: {str(exc).splitlines()[0]}") from None

    def add(self, path: Path, expected: Cid | None = None) -> Cid:
        expected = expected or add_path(path).cid
        # raw_leaves must be given: cid_version=1 alone turns raw leaves on in kubo but not in js-ipfs.
        reply = self._call("add", self.client.add, str(path), recursive=True, cid_version=1, raw_leaves=True, pin=True)
        entries = reply if isinstance(reply, list) else [reply]
        top = next((e for e in reversed(entries) if e.get("Name") == Path(path).name), None)
        if top is None:
            # A daemon stopping mid-add answers with the entries it finished, not the root: retry later.
            raise StoreUnavailable(f"IPFS daemon at {self.api} ended the add of {Path(path).name} before reporting its root ({len(entries)} entries)")
        try:
            root = Cid.parse(top["Hash"])
        except (KeyError, CidError) as exc:
            raise StoreUnavailable(f"IPFS daemon at {self.api} gave an add reply without a usable CID: {exc}") from None
        if root != expected:
            raise CidMismatch(f"IPFS daemon at {self.api} computed {root} for {path}, the device computed {expected}: not pinned as the clip's CID")
        self._call("pin", self.client.pin.add, str(root))
        return root

    def get(self, cid: Cid) -> bytes:
        block = self._call("block get", self.client.block.get, str(cid))
        if not cid.matches(block):
            raise CidMismatch(f"IPFS daemon at {self.api} served block {cid} with bytes that do not hash to it")
        return block

    def is_pinned(self, cid: Cid) -> bool:
        try:
            reply = self._call("pin ls", self.client.pin.ls, str(cid), type="recursive")
        except StoreUnavailable as exc:
            if "not pinned" in str(exc):  # the daemon's answer for a CID it does not pin
                return False
            raise
        # The reply is a mapping; its keys come in the daemon's CID base (base58btc from js-ipfs).
        keys = reply["Keys"] if "Keys" in reply else {}
        return any(Cid.parse(k) == cid for k in keys)


def open_store(ipfs_api: str, data_dir: Path) -> ContentStore:
    """The daemon named in config, else the embedded store in the data directory."""
    if ipfs_api:
        return DaemonStore(ipfs_api)
    return EmbeddedStore(data_dir / "ipfs" / "blocks.sqlite")

"""Reading blocks from an IPFS HTTP gateway (the trustless gateway API: `GET /ipfs/<cid>?format=raw`), for
those who take clips off the network without a node of their own. A gateway is somebody else's server: every
block is bounded in size while it arrives and checked against its CID before anything reads it."""

from __future__ import annotations

import urllib.error
import urllib.request

from storage.content.cid import Cid
from storage.content.ipfs import CidMismatch, StoreUnavailable, _why

RAW_BLOCK = "application/vnd.ipld.raw"
MAX_BLOCK = 2 << 20  # kubo refuses blocks over 2 MiB; a clip's are 256 KiB chunks and small directory nodes


class BlockNotFound(LookupError):
    """The gateway does not have the block (HTTP 404 or 410)."""


class GatewayStore:
    """Read-only: `get` only (a gateway cannot pin); the dataset build and `knack review` need nothing else."""

    name = "ipfs gateway"

    def __init__(self, url: str, timeout: float = 60.0):
        self.url, self.timeout = url.rstrip("/"), timeout

    def get(self, cid: Cid) -> bytes:
        request = urllib.request.Request(f"{self.url}/ipfs/{cid}?format=raw", headers={"Accept": RAW_BLOCK})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as reply:
                block = reply.read(MAX_BLOCK + 1)
        except urllib.error.HTTPError as exc:
            if exc.code in (404, 410):
                raise BlockNotFound(f"the gateway {self.url} does not have block {cid}") from None
            raise StoreUnavailable(f"the gateway {self.url} answered HTTP {exc.code} for block {cid}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise StoreUnavailable(f"the gateway {self.url} is not reachable: {_why(exc)}") from None
        if len(block) > MAX_BLOCK:
            raise CidMismatch(f"the gateway {self.url} served more than {MAX_BLOCK >> 20} MiB for block {cid}: no block of a clip is that large")
        if not cid.matches(block):
            raise CidMismatch(f"the gateway {self.url} served bytes for block {cid} that do not hash to it")
        return block

    def close(self) -> None:
        pass

"""Remote pinning through the IPFS Pinning Service API (the standard one pinning services and IPFS
Cluster serve): asks a service to keep a copy of a clip by CID. The bearer token comes from the
environment (KNACK_PINNING_TOKEN), never from a file in the repository or a log line."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request

from storage.content.ipfs import StoreUnavailable

TOKEN_ENV = "KNACK_PINNING_TOKEN"
OK_STATUSES = ("queued", "pinning", "pinned")


class RemotePinError(Exception):
    """The service answered, and refused (bad token, over quota, failed pin): retrying will not help."""


class PinningService:
    def __init__(self, endpoint: str, token: str, timeout: float = 30.0, origins: tuple[str, ...] = ()):
        if not token:
            raise RemotePinError(f"a pinning service is configured ({endpoint}) but {TOKEN_ENV} is not set")
        self.endpoint, self.timeout, self.origins = endpoint.rstrip("/"), timeout, list(origins)
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json", "Accept": "application/json"}

    def __repr__(self) -> str:  # the token stays out of logs and tracebacks
        return f"PinningService({self.endpoint})"

    def _request(self, method: str, path: str, body: dict | None = None) -> dict:
        request = urllib.request.Request(
            self.endpoint + path, data=json.dumps(body).encode() if body is not None else None, method=method, headers=self._headers
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            detail = ""
            try:
                detail = json.loads(exc.read() or b"{}").get("error", {}).get("details", "")
            except ValueError:
                pass
            if exc.code in (401, 403):
                raise RemotePinError(f"pinning service {self.endpoint} refused the token (HTTP {exc.code}); check {TOKEN_ENV}") from None
            if exc.code in (429,) or exc.code >= 500:
                raise StoreUnavailable(f"pinning service {self.endpoint} is busy or failing (HTTP {exc.code}) {detail}".strip()) from None
            raise RemotePinError(f"pinning service {self.endpoint} refused {method} {path.split('?')[0]} (HTTP {exc.code}) {detail}".strip()) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise StoreUnavailable(f"pinning service {self.endpoint} is not reachable: {getattr(exc, 'reason', exc)}") from None

    def status(self, cid: str) -> str | None:
        """The status of our pin of `cid` at the service, or None if it has none."""
        reply = self._request("GET", "/pins?" + urllib.parse.urlencode({"cid": cid, "limit": 1}))
        results = reply.get("results", [])
        return results[0].get("status") if results else None

    def pin(self, cid: str, name: str) -> str:
        """Asks the service to pin `cid` unless it already has it (idempotent); returns the status."""
        status = self.status(cid)
        if status in OK_STATUSES:
            return status
        reply = self._request("POST", "/pins", {"cid": cid, "name": name, "origins": self.origins})
        status = reply.get("status", "")
        if status not in OK_STATUSES:
            raise RemotePinError(f"pinning service {self.endpoint} answered status {status!r} for {cid}")
        return status

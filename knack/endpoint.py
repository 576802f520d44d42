"""/healthz and /metrics over HTTP on a loopback port, served from a thread of their own: the endpoint of every
long-running service (`knack robot`, `knack validate --watch`). Each service judges its own health; this
module only says what the answer looks like and serves it."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

log = logging.getLogger("knack.http")


def metrics_registry(collector):
    """A service's own metrics (a prometheus_client Collector) plus the process's: resident memory, open file
    descriptors, CPU."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.process_collector import ProcessCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    ProcessCollector(registry=registry)
    return registry


@dataclass(frozen=True)
class Health:
    """ok, or degraded with one sentence per reason (what and why); the service keeps running either way."""

    status: str  # "ok" | "degraded"
    reasons: tuple[str, ...] = ()

    @classmethod
    def of(cls, reasons) -> Health:
        reasons = tuple(reasons)
        return cls("degraded" if reasons else "ok", reasons)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def as_dict(self) -> dict:
        return {"status": self.status, "reasons": list(self.reasons)}


class HealthServer:
    """GET /healthz: JSON {"status": "ok"|"degraded", "reasons": [...]}, HTTP 200 when ok and 503 when
    degraded (so `curl -f` and probes see it); GET /metrics: the Prometheus text format."""

    def __init__(self, host: str, port: int, health: Callable[[], dict], registry):
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                path = self.path.split("?", 1)[0]
                try:
                    if path == "/metrics":
                        self._send(200, CONTENT_TYPE_LATEST, generate_latest(outer.registry))
                    elif path in ("/healthz", "/health"):
                        state = outer.health()
                        body = json.dumps(state).encode() + b"\n"
                        self._send(200 if state["status"] == "ok" else 503, "application/json", body)
                    else:
                        self._send(404, "text/plain; charset=utf-8", b"not found: try /healthz or /metrics\n")
                except Exception as exc:  # a scrape must never take the service down
                    log.exception("%s failed", path)
                    self._send(500, "text/plain; charset=utf-8", f"{type(exc).__name__}: {exc}\n".encode())

            def _send(self, code: int, content_type: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format, *args):  # noqa: A002 — scrapes every 15 s are not news
                pass

        self.health, self.registry = health, registry
        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.address = self._server.server_address[:2]
        self._thread = threading.Thread(target=self._server.serve_forever, name="knack-http", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.address[0]}:{self.address[1]}/healthz"

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

"""Remote pinning over the IPFS Pinning Service API, against a local HTTP service that speaks it."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from storage.content.ipfs import EmbeddedStore
from storage.content.remote_pin import PinningService, RemotePinError
from storage.outbox.db import NEVER, Outbox
from storage.outbox.pinner import enqueue_all, pin_due
from tests.test_outbox import ACCEPTED, noise_frames

TOKEN = "secret-token"


@pytest.fixture
def service():
    """A minimal Pinning Service API: GET /pins?cid=…, POST /pins, bearer token required."""
    pins, posts = {}, []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def reply(self, code, body):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def authorized(self):
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                self.reply(401, {"error": {"reason": "UNAUTHORIZED", "details": "bad token"}})
                return False
            return True

        def do_GET(self):
            if self.authorized():
                cid = parse_qs(urlparse(self.path).query).get("cid", [""])[0]
                found = [pins[cid]] if cid in pins else []
                self.reply(200, {"count": len(found), "results": found})

        def do_POST(self):
            if self.authorized():
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                posts.append(body)
                pins[body["cid"]] = {"requestid": str(len(posts)), "status": "queued", "pin": body}
                self.reply(202, pins[body["cid"]])

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", pins, posts
    server.shutdown()


def test_pinned_clips_are_also_kept_by_the_service_once(tmp_path, make_clip, service):
    url, pins, posts = service
    clips = [make_clip(noise_frames(5, seed), decision=ACCEPTED) for seed in range(2)]
    outbox = Outbox(tmp_path / "o.sqlite")
    enqueue_all(outbox, clips)
    remote = PinningService(url, TOKEN)
    results = pin_due(outbox, EmbeddedStore(tmp_path / "b.sqlite"), remote=remote)
    assert all(not r.error for r in results) and outbox.counts()["pinned"] == 2
    assert sorted(p["cid"] for p in posts) == sorted(r.cid for r in results)
    assert {p["name"] for p in posts} == {c.name for c in clips}
    assert remote.pin(results[0].cid, "again") == "queued" and len(posts) == 2  # idempotent
    assert TOKEN not in repr(remote)


def test_a_refused_token_stops_the_clip_and_a_service_that_is_down_is_retried(tmp_path, make_clip, service):
    url, _, posts = service
    clip = make_clip(noise_frames(5, 0), decision=ACCEPTED)
    outbox = Outbox(tmp_path / "o.sqlite")
    enqueue_all(outbox, [clip])
    store = EmbeddedStore(tmp_path / "b.sqlite")
    [result] = pin_due(outbox, store, remote=PinningService(url, "wrong"))
    assert "refused the token" in result.error and outbox.get(clip.name).next_try == NEVER
    outbox.retry()
    [result] = pin_due(outbox, store, remote=PinningService("http://127.0.0.1:9", TOKEN, timeout=2))
    assert "is not reachable" in result.error
    entry = outbox.get(clip.name)
    assert entry.state == "accepted" and entry.next_try < NEVER and posts == []
    with pytest.raises(RemotePinError, match="KNACK_PINNING_TOKEN is not set"):
        PinningService(url, "")

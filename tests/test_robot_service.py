"""`knack robot` end to end, as systemd runs it: a subprocess with a video-file camera, a joint-state stream on a
real pty and the embedded store and chain; /metrics and /healthz scraped over HTTP; SIGTERM mid-clip, kill -9
mid-clip, restarts; every clip recorded ends settled (or rejected on the device) exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from collector.bundle import verify_bundle
from collector.sample import SAMPLE_VIDEO
from collector.simulator import joint_names
from tests.service_probe import free_port, http_get, metrics

ROOT = Path(__file__).resolve().parent.parent
FINAL = ("settled", "rejected")


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return json.dumps(str(v))


def write_config(path: Path, data: dict) -> Path:
    lines = []
    for key, value in data.items():
        if not isinstance(value, (dict, list)) or (isinstance(value, list) and value and not isinstance(value[0], dict)):
            lines.append(f"{key} = {toml_value(value)}")
    for key, value in data.items():
        if isinstance(value, dict):
            lines += ["", f"[{key}]"] + [f"{k} = {toml_value(v)}" for k, v in value.items()]
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            for table in value:
                lines += ["", f"[[{key}]]"] + [f"{k} = {toml_value(v)}" for k, v in table.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


class Robot:
    """One `knack robot` process; its stdout (JSON lines) goes to a file the test reads."""

    started: list = []  # every process of the test, killed with its capture process at teardown

    def __init__(self, config: Path, env: dict, log: Path, port: int):
        self.log_path, self.port = log, port
        self._log = open(log, "ab")
        self.start_offset = log.stat().st_size if log.exists() else 0
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "knack", "--config", str(config), "robot"],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group, so teardown can take the capture process with it
        )
        Robot.started.append(self.proc)

    def events(self) -> list[dict]:
        text = self.log_path.read_bytes()[self.start_offset :].decode(errors="replace")
        # Only whole lines: the robot may be half-way through writing the last one while the test reads.
        return [json.loads(line) for line in text.split("\n")[:-1] if line.strip()]

    def wait_event(self, name: str, timeout: float = 60.0, count: int = 1) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [e for e in self.events() if e["event"] == name]
            if len(found) >= count:
                return found[count - 1]
            assert self.proc.poll() is None, f"knack robot exited {self.proc.returncode}: {self.proc.stderr.read().decode()}"
            time.sleep(0.1)
        raise AssertionError(f"no {name} event within {timeout} s: {[e['event'] for e in self.events()]}")

    def get(self, path: str) -> tuple[int, str]:
        return http_get(self.port, path)

    def metrics(self) -> dict[tuple, float]:
        return metrics(self.port)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def mid_clip(self, clip_s: float) -> None:
        """Waits until the open clip is about half recorded."""
        written = [e for e in self.events() if e["event"] == "clip.written"]
        self.wait_event("clip.written", count=len(written) + 1)
        time.sleep(clip_s / 2)


def metric(m: dict, name: str, **labels) -> float:
    return m.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def robot_setup(tmp_path, simulator):
    sim = simulator(rate=500, protocol="jsonl", stream="joints", joints=6, garbage=0.01)
    port = free_port()
    data = tmp_path / "data"
    config = write_config(
        tmp_path / "knack.toml",
        {
            "data_dir": str(data),
            "recorder": {"clip_seconds": 2.0},
            # Every clip is accepted on the device, so every one must reach the chain: the flow is under test, not the policy.
            "policy": {
                "min_hand_fraction": 0.0,
                "max_edge_blur_px": 50.0,
                "max_frame_drop_fraction": 0.5,
                "max_sample_loss_fraction": 0.5,
                "max_gap_s": 30.0,
                "min_duration_s": 0.0,
            },
            "robot": {"health_port": port, "act_as_validator": True, "chain_every_s": 1.0, "status_every_s": 2.0, "grace_s": 20.0, "min_free_mb": 1.0},
            "camera": [{"name": "cam", "source": str(SAMPLE_VIDEO), "loop": True}],
            "joints": [{"name": "arm", "port": sim.port, "protocol": "jsonl", "joints": list(joint_names(6)), "nominal_rate": 500.0}],
        },
    )
    env = dict(
        os.environ,
        HOME=str(tmp_path),
        XDG_DATA_HOME=str(tmp_path / "share"),
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        KNACK_DEVICE_PASSWORD="robot password 1",
    )
    env.pop("KNACK_DATA_DIR", None)
    yield config, env, tmp_path / "robot.log", port, data
    # A failed test leaves no service behind to hold a pty or a port for the tests after it.
    for proc in Robot.started:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    Robot.started.clear()


def test_sigterm_kill_9_a_second_sigterm_and_restarts_settle_every_clip_exactly_once(robot_setup):
    config, env, log, port, data = robot_setup
    # Run 1: scrape, then SIGTERM in the middle of a clip.
    robot = Robot(config, env, log, port)
    started = robot.wait_event("robot.started", timeout=60)
    assert started["health"] == f"http://127.0.0.1:{port}/healthz"
    robot.wait_event("chain.settled", timeout=90)
    m = robot.metrics()
    assert metric(m, "knack_frames_total", stream="cam", kind="camera") > 30
    assert metric(m, "knack_samples_total", stream="arm", kind="joints") > 500
    assert metric(m, "knack_clips", state="settled") >= 1
    assert metric(m, "knack_stream_up", stream="cam", kind="camera", state="recording") == 1
    assert metric(m, "knack_recording") == 1 and metric(m, "process_open_fds") > 0
    # The simulated arm corrupts 1% of its JSON lines: counted per stream and reason.
    assert sum(v for (name, labels), v in m.items() if name == "knack_parse_errors_total" and ("stream", "arm") in labels) > 0
    status, body = robot.get("/healthz")
    assert (status, json.loads(body)) == (200, {"status": "ok", "reasons": []})
    assert robot.get("/nope")[0] == 404
    robot.mid_clip(2.0)
    t0 = time.monotonic()
    robot.proc.send_signal(signal.SIGTERM)
    assert robot.wait(timeout=30) == 0
    assert time.monotonic() - t0 < 20 + 5
    stopped = robot.events()[-1]
    assert stopped["event"] == "robot.stopped"
    # The clip cut by the signal was sealed, not lost: it is the last one written before the stop. On an idle
    # machine it is labeled within the grace period too; on a busy one (`finished` false) the next start labels
    # it, which the end of this test checks (every clip on disk reaches a final state).
    written_1 = [e["clip"] for e in robot.events() if e["event"] == "clip.written"]
    assert (data / "clips" / written_1[-1] / "manifest.json").is_file()
    if stopped["finished"]:
        assert written_1[-1] in {e["clip"] for e in robot.events() if e["event"] == "clip.labeled"}

    # Run 2: kill -9 in the middle of a clip. The capture process outlives the service: it seals the open clip
    # and exits (its session is gone), so the clip is not lost.
    robot = Robot(config, env, log, port)
    robot.wait_event("robot.started", timeout=60)
    robot.mid_clip(2.0)
    robot.proc.send_signal(signal.SIGKILL)
    assert robot.wait(timeout=10) == -signal.SIGKILL
    written_2 = {e["clip"] for e in robot.events() if e["event"] == "clip.written"}

    # Run 3: the clip cut by kill -9 is on disk, sealed, and labeled by the next start; then SIGTERM twice:
    # the second ends the process at once.
    robot = Robot(config, env, log, port)
    robot.wait_event("robot.started", timeout=60)
    clips = data / "clips"
    orphans = {p.name for p in clips.iterdir() if not p.name.startswith(".")} - set(written_1) - written_2
    assert orphans, "the clip open at kill -9 was sealed by the capture process"
    assert all(verify_bundle(clips / name).ok for name in orphans)
    robot.mid_clip(2.0)
    robot.proc.send_signal(signal.SIGTERM)
    robot.wait_event("robot.stopping", timeout=10)
    robot.proc.send_signal(signal.SIGTERM)
    assert robot.wait(timeout=10) == 128 + signal.SIGTERM
    assert robot.events()[-1]["event"] == "robot.killed"

    # Run 4: whatever run 3 left is picked up; a clean stop given the time to finish settles the rest (on a busy
    # machine 20 s of grace may not be enough for the backlog of three runs: the grace is what bounds the stop).
    text = config.read_text()
    assert "grace_s = 20.0" in text
    config.write_text(text.replace("grace_s = 20.0", "grace_s = 600.0"))
    robot = Robot(config, env, log, port)
    robot.wait_event("robot.started", timeout=60)
    robot.wait_event("clip.written", timeout=30)
    robot.proc.send_signal(signal.SIGTERM)
    assert robot.wait(timeout=600) == 0
    assert robot.events()[-1]["event"] == "robot.stopped" and robot.events()[-1]["finished"] is True

    # Every clip on disk has one outbox row in a final state, and the chain holds each CID once.
    from storage.content.cid import Cid
    from storage.ledger.web3_ledger import open_ledger
    from storage.outbox.db import Outbox

    outbox = Outbox(data / "outbox.sqlite")
    rows = outbox.entries()
    on_disk = sorted(p.name for p in (data / "clips").iterdir() if not p.name.startswith("."))
    assert sorted(r.clip_id for r in rows) == on_disk
    assert {r.state for r in rows} <= set(FINAL), {r.clip_id: (r.state, r.last_error) for r in rows if r.state not in FINAL}
    settled = [r for r in rows if r.state == "settled"]
    assert len(settled) >= 3
    chain = open_ledger("", data)
    digests = [bytes(d) for e in chain.registry.events.BatchSubmitted().get_logs(from_block=chain.deployment.block) for d in e["args"]["digests"]]
    assert len(digests) == len(set(digests)), "a clip was submitted twice"
    assert set(digests) == {Cid.parse(r.cid).digest for r in settled}
    chain.close()
    outbox.close()
    # No secret reached the log.
    assert "robot password 1" not in log.read_text()

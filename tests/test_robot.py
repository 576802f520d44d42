"""The pieces of `knack robot`: health judgement, disk limits, JSON-line logs, /metrics and /healthz over HTTP,
and the service in process (quota pause and resume, pruning, reload), plus the systemd unit."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from collector.bundle import list_clips
from collector.config import from_mapping
from collector.sample import SAMPLE_VIDEO
from knack.endpoint import HealthServer
from knack.logs import JsonLines, install
from robot import disk
from robot.health import StreamHealth, assess
from robot.metrics import Snapshot, StreamSnapshot, registry_for
from storage.outbox.db import Entry
from tests.service_probe import samples

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "robot/systemd/knack-robot.service"
MB = 1024 * 1024


# --- health ---------------------------------------------------------------------------------------
def test_health_is_ok_when_every_stream_records():
    h = assess([StreamHealth("cam", "camera", "recording"), StreamHealth("arm", "joints", "recording")], recording=True)
    assert h.ok and h.as_dict() == {"status": "ok", "reasons": []}


def test_health_names_each_problem_in_words():
    h = assess(
        [StreamHealth("cam", "camera", "waiting: /dev/video0 is not there (unplugged?)"), StreamHealth("arm", "serial", "recording")],
        recording=False,
        paused_because="only 90 MB free on the disk, the floor is 512 MB (robot.min_free_mb)",
        chain_problem="http://10.0.0.5:8545 is not reachable",
    )
    assert h.status == "degraded"
    assert h.reasons == (
        "recording paused: only 90 MB free on the disk, the floor is 512 MB (robot.min_free_mb)",
        "camera cam is not delivering: /dev/video0 is not there (unplugged?)",
        "chain: http://10.0.0.5:8545 is not reachable (clips wait in the outbox)",
    )


# --- disk limits ----------------------------------------------------------------------------------
def test_recording_pauses_at_the_quota_and_resumes_only_with_room_to_spare():
    usage = disk.DiskUsage(data_bytes=100 * MB, free_bytes=10_000 * MB)
    assert disk.pause_reason(usage, quota_mb=200, min_free_mb=512, paused=False) is None
    assert "at its quota of 100 MB (robot.disk_quota_mb)" in disk.pause_reason(usage, quota_mb=100, min_free_mb=512, paused=False)
    # Just under the quota again is not enough to resume: it would stop again at the next clip.
    assert disk.pause_reason(disk.DiskUsage(98 * MB, 10_000 * MB), quota_mb=100, min_free_mb=0, paused=True) is not None
    assert disk.pause_reason(disk.DiskUsage(90 * MB, 10_000 * MB), quota_mb=100, min_free_mb=0, paused=True) is None


def test_recording_pauses_before_the_disk_fills():
    why = disk.pause_reason(disk.DiskUsage(1 * MB, 400 * MB), quota_mb=0, min_free_mb=512, paused=False)
    assert why == "only 400 MB free on the disk, the floor is 512 MB (robot.min_free_mb)"


def test_measure_counts_what_is_under_the_data_directory(tmp_path):
    (tmp_path / "clips/a").mkdir(parents=True)
    (tmp_path / "clips/a/video.mp4").write_bytes(b"x" * 100_000)
    usage = disk.measure(tmp_path)
    assert 100_000 <= usage.data_bytes < 200_000 and usage.free_bytes > 0


def entry(clip_id: str, state: str, updated: float) -> Entry:
    return Entry(clip_id, f"/clips/{clip_id}", state, None, "", 0, 0.0, "", updated, updated)


def test_only_rejected_clips_older_than_the_limit_are_pruned():
    now = 1_000_000.0
    entries = [
        entry("old-rejected", "rejected", now - 49 * 3600),
        entry("new-rejected", "rejected", now - 1 * 3600),
        entry("old-accepted", "accepted", now - 100 * 3600),  # owed to the network: never pruned
        entry("old-pinned", "pinned", now - 100 * 3600),
        entry("older-rejected", "rejected", now - 72 * 3600),
    ]
    assert disk.prunable(entries, now, max_age_h=48) == ["older-rejected", "old-rejected"]
    assert disk.prunable(entries, now, max_age_h=0) == []


# --- logs -----------------------------------------------------------------------------------------
def test_log_records_are_one_json_object_per_line_with_their_fields():
    stream = io.StringIO()
    problems = install(stream=stream)
    try:
        log = logging.getLogger("knack.test")
        log.info("clip %s written", "c1", extra={"event": "clip.written", "fields": {"clip": "c1", "frames": 60}})
        try:
            raise ValueError("bad\nthing")
        except ValueError:
            log.exception("it failed")
    finally:
        logging.getLogger().handlers.clear()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["event"] == "clip.written" and first["msg"] == "clip c1 written" and first["frames"] == 60 and first["level"] == "info"
    assert first["ts"].endswith("Z")
    assert second["level"] == "error" and "ValueError: bad\nthing" in second["error"]
    assert problems.message == "it failed" and problems.since(60)


def test_json_lines_formatter_keeps_a_multiline_message_on_one_line():
    record = logging.makeLogRecord({"name": "knack", "levelname": "WARNING", "msg": "two\nlines"})
    assert "\n" not in JsonLines().format(record)


# --- /metrics and /healthz --------------------------------------------------------------------------
def snapshot(**changes) -> Snapshot:
    base = Snapshot(
        streams=[
            StreamSnapshot("cam", "camera", "recording", 900, 1, 2, 0, {}, 30.0),
            StreamSnapshot("arm", "joints", "waiting: gone", 15000, 0, 0, 3, {"bad json": 4, "crc mismatch": 1}, 500.0),
        ],
        clips_by_state={"recorded": 1, "settled": 7},
        counts={"written": 8, "accepted": 7},
        recording=True,
        paused_because=None,
        upload_lag_s=12.5,
        last_error_at=1_700_000_000.0,
        label_queue=1,
        data_bytes=5 * MB,
        free_bytes=900 * MB,
        chain_rounds={"ok": 3, "error": 1},
    )
    return dataclasses.replace(base, **changes)


def test_metrics_follow_the_snapshot_per_stream_and_per_state():
    from prometheus_client import generate_latest

    m = samples(generate_latest(registry_for(lambda: snapshot())).decode())
    assert m[("knack_frames_total", (("kind", "camera"), ("stream", "cam")))] == 900
    assert m[("knack_samples_total", (("kind", "joints"), ("stream", "arm")))] == 15000
    assert m[("knack_lost_samples_total", (("kind", "joints"), ("stream", "arm")))] == 3
    assert m[("knack_late_frames_total", (("kind", "camera"), ("stream", "cam")))] == 2
    assert m[("knack_parse_errors_total", (("reason", "bad json"), ("stream", "arm")))] == 4
    assert m[("knack_stream_up", (("kind", "joints"), ("state", "waiting"), ("stream", "arm")))] == 0
    assert m[("knack_clips", (("state", "settled"),))] == 7
    assert m[("knack_upload_lag_seconds", ())] == 12.5
    assert m[("knack_last_error_timestamp_seconds", ())] == 1_700_000_000.0
    assert m[("knack_chain_rounds_total", (("result", "error"),))] == 1
    assert m[("knack_recording_paused", ())] == 0
    assert ("process_resident_memory_bytes", ()) in m


def test_healthz_answers_200_when_ok_and_503_with_reasons_when_degraded():
    state = {"status": "ok", "reasons": []}
    server = HealthServer("127.0.0.1", 0, lambda: state, registry_for(lambda: snapshot())).start()
    url = f"http://{server.address[0]}:{server.address[1]}"
    try:
        with urllib.request.urlopen(url + "/healthz") as r:
            assert r.status == 200 and json.load(r) == state
        state = {"status": "degraded", "reasons": ["camera cam is not delivering: gone"]}
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(url + "/healthz")
        assert err.value.code == 503 and json.load(err.value)["reasons"] == ["camera cam is not delivering: gone"]
        with urllib.request.urlopen(url + "/metrics") as r:
            assert r.headers["Content-Type"].startswith("text/plain") and b"knack_frames_total" in r.read()
    finally:
        server.close()


def test_the_endpoint_listens_on_loopback_by_default():
    assert from_mapping({}).robot.health_host == "127.0.0.1"


# --- the service in process ------------------------------------------------------------------------
@pytest.fixture
def service_config(tmp_path, simulator):
    sim = simulator(rate=200, protocol="csv")

    def make(**robot):
        return from_mapping(
            {
                "data_dir": str(tmp_path / "data"),
                "recorder": {"clip_seconds": 1.0},
                "labeler": {"label_on_record": False},
                "robot": {"health_port": 0, "status_every_s": 1.0, "min_free_mb": 0.0, **robot},
                "camera": [{"name": "cam", "source": str(SAMPLE_VIDEO), "loop": True}],
                "serial": [
                    {
                        "name": "imu",
                        "port": sim.port,
                        "csv_columns": ["t_us", "seq", "ax", "ay", "az", "gx", "gy", "gz"],
                        "device_time_field": "t_us",
                        "seq_field": "seq",
                    }
                ],
            }
        ).validate()

    return make


def run_service(service):
    thread = threading.Thread(target=lambda: setattr(service, "exit_code", service.run(install_signals=False)), daemon=True)
    thread.start()
    wait_for(lambda: service.session is not None or not thread.is_alive())  # the device session is up
    return thread


def events(caplog, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == name]


def wait_for(predicate, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_a_full_disk_quota_pauses_recording_and_a_reload_with_room_resumes_it(service_config, device_key, caplog, monkeypatch):
    from robot import service as service_module

    caplog.set_level(logging.INFO)
    monkeypatch.setattr(service_module, "DISK_EVERY_S", 0.2)
    tight = service_config(disk_quota_mb=0.5)  # the first clip or two reach it
    roomy = service_config(disk_quota_mb=10_000.0)
    configs = [tight]
    service = service_module.RobotService(tight, device_key, load_config=lambda: configs[-1])
    thread = run_service(service)
    try:
        paused = wait_for(lambda: events(caplog, "robot.paused"))
        assert "robot.disk_quota_mb" in paused[0].fields["reason"]
        health = service.health()
        assert not health.ok and health.reasons[0].startswith("recording paused: the data directory holds")
        assert service.snapshot().paused_because and not service.snapshot().recording
        paused_ns = service.session.recorder.clock.now_ns()  # the pause was asked for before this
        time.sleep(1.5)
        # The promise is that no clip starts after the pause; clips cut before it may still be sealing (on a busy
        # machine several are), so what is bounded is when each clip begins, not how many arrive.
        starts = [json.loads((c / "manifest.json").read_text())["start"]["mono_ns"] for c in list_clips(tight.clips_path)]
        assert starts and max(starts) < paused_ns
        configs.append(roomy)
        service.signals.reload.set()
        wait_for(lambda: events(caplog, "robot.resumed"))
        wait_for(lambda: any(json.loads((c / "manifest.json").read_text())["start"]["mono_ns"] > paused_ns for c in list_clips(tight.clips_path)))
        assert service.health().ok or all("starting" in r for r in service.health().reasons)
    finally:
        service.signals.stop.set()
        thread.join(30)
    assert service.exit_code == 0


def test_a_bad_configuration_on_reload_is_reported_and_the_running_one_kept(service_config, device_key, caplog):
    from collector.config import ConfigError
    from robot.service import RobotService

    caplog.set_level(logging.INFO)
    config = service_config()

    def broken():
        raise ConfigError("robot.grace_s = -1 is not valid: expected seconds between 0 and 3600")

    service = RobotService(config, device_key, load_config=broken)
    thread = run_service(service)
    try:
        wait_for(lambda: events(caplog, "robot.started"))
        service.signals.reload.set()
        failed = wait_for(lambda: events(caplog, "robot.reload_failed"))
        assert "robot.grace_s = -1" in failed[0].getMessage() and service.config is config
        wait_for(lambda: service.session.counts["written"] >= 1)
    finally:
        service.signals.stop.set()
        thread.join(30)
    assert service.exit_code == 0


def test_rejected_clips_are_pruned_by_age_and_accepted_ones_kept(service_config, device_key, caplog, monkeypatch):
    from robot import service as service_module

    caplog.set_level(logging.INFO)
    monkeypatch.setattr(service_module, "PRUNE_EVERY_S", 0.3)
    config = service_config(prune_rejected_after_h=0.5 / 3600)  # half a second
    service = service_module.RobotService(config, device_key)
    # Two earlier clips with decisions: one rejected long ago, one accepted long ago and not yet pinned.
    from storage.outbox.db import Outbox

    outbox = Outbox(config.data_path / "outbox.sqlite")
    for clip_id, accepted in (("00000000-rejected", False), ("00000000-accepted", True)):
        (config.clips_path / clip_id).mkdir(parents=True)
        (config.clips_path / clip_id / "video.mp4").write_bytes(b"frames")
        outbox.record(clip_id, config.clips_path / clip_id)
        outbox.decide(clip_id, accepted, "" if accepted else "no hands")
    outbox.close()
    time.sleep(0.6)
    thread = run_service(service)
    try:
        wait_for(lambda: events(caplog, "clip.pruned"))
    finally:
        service.signals.stop.set()
        thread.join(30)
    assert not (config.clips_path / "00000000-rejected").exists()
    assert (config.clips_path / "00000000-accepted").exists()
    assert service.snapshot().counts["pruned"] == 1


# --- the systemd unit ------------------------------------------------------------------------------
def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def test_the_unit_is_hardened_and_writes_only_its_data_directory():
    s = unit_settings()
    assert s["User"] == ["knack"] and "knack" in s["SupplementaryGroups"][0].split()
    assert s["Restart"] == ["on-failure"] and s["ProtectSystem"] == ["strict"] and s["NoNewPrivileges"] == ["yes"]
    assert s["ReadWritePaths"] == ["/var/lib/knack"] and s["Environment"][0] == "KNACK_DATA_DIR=/var/lib/knack"
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"] and s["ExecStart"][0].endswith(" robot")
    # systemd must wait longer than the service's own grace period before it sends SIGKILL.
    assert float(s["TimeoutStopSec"][0]) > from_mapping({}).robot.grace_s
    assert not any("PASSWORD" in v for v in s["Environment"])


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here")
def test_systemd_accepts_the_unit_and_rates_its_exposure_low(tmp_path):
    unit = tmp_path / "knack-robot.service"
    knack = shutil.which("knack") or str(Path(__import__("sys").executable).with_name("knack"))
    unit.write_text(UNIT.read_text().replace("/opt/knack/.venv/bin/knack", knack))
    verify = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr
    # Exposure 0.0 (locked down) to 10.0 (unprotected), times ten: at most 2.5.
    security = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--threshold=25", str(unit)], capture_output=True, text=True)
    assert security.returncode == 0, security.stdout[-2000:]


@pytest.mark.parametrize("down", ["chain", "ipfs"])
def test_with_the_chain_or_ipfs_down_it_keeps_recording_into_the_outbox_and_says_why(service_config, device_key, caplog, down):
    from robot.service import RobotService

    caplog.set_level(logging.INFO)
    config = service_config(chain_every_s=1.0)
    nowhere = {"chain": {"chain_rpc": "http://127.0.0.1:9"}, "ipfs": {"ipfs_api": "/ip4/127.0.0.1/tcp/9/http"}}[down]
    config = dataclasses.replace(
        config,
        storage=dataclasses.replace(config.storage, **nowhere),
        labeler=dataclasses.replace(config.labeler, label_on_record=True),
        policy=dataclasses.replace(config.policy, min_hand_fraction=0.0, max_edge_blur_px=50.0, max_sample_loss_fraction=1.0, max_frame_drop_fraction=1.0),
    )
    # The device knows its network from an earlier contact (its saved deployment): clips are signed for it.
    from storage.ledger.base import Deployment

    Deployment(31337, "0x" + "ab" * 20, "0x" + "cd" * 20, 0).save(
        config.data_path / "chain" / ("deployment-31337.json" if down == "chain" else "deployment-embedded.json")
    )
    service = RobotService(config, device_key)
    thread = run_service(service)
    try:
        waiting = "pinned" if down == "chain" else "accepted"
        wait_for(lambda: service.session.outbox.counts()[waiting] >= 2, timeout=60)
        reasons = wait_for(lambda: [r for r in service.health().reasons if r.startswith("chain:" if down == "chain" else "content store:")])
        assert ("127.0.0.1:9" if down == "chain" else "/ip4/127.0.0.1/tcp/9/http is not reachable (add): Connection refused") in reasons[0]
        assert reasons[0].endswith("(clips wait in the outbox)")
        assert service.snapshot().recording and service.snapshot().upload_lag_s > 0
        written = service.session.counts["written"]
        wait_for(lambda: service.session.counts["written"] > written)  # still recording
    finally:
        service.signals.stop.set()
        thread.join(60)
    assert service.exit_code == 0
    counts = service.session.outbox.counts()
    assert counts["settled"] == 0 and counts[waiting] >= 2


def test_a_grace_period_that_runs_out_stops_on_time_and_leaves_the_rest_for_the_next_start(service_config, device_key, caplog):
    from robot.service import RobotService

    caplog.set_level(logging.INFO)
    config = service_config(grace_s=0.0)
    config = dataclasses.replace(config, labeler=dataclasses.replace(config.labeler, label_on_record=True))
    service = RobotService(config, device_key)
    thread = run_service(service)
    wait_for(lambda: service.session.counts["written"] >= 1, timeout=30)
    t0 = time.monotonic()
    service.signals.stop.set()
    thread.join(30)
    # Sealing the open clip still happens (it waits at most recorder.max_source_lag_s for the sources).
    assert time.monotonic() - t0 < config.recorder.max_source_lag_s + 3
    assert service.exit_code == 0 and service.finished is False
    assert "resumes at the next start" in events(caplog, "robot.stopped")[0].getMessage()
    # The labeler goes on in its thread here (in `knack robot` the process ends); let it finish before the test does.
    wait_for(lambda: not service.session.labels.running, timeout=60)


def test_a_damaged_outbox_at_start_is_rebuilt_and_said_in_healthz_instead_of_a_crash_loop(service_config, device_key, caplog):
    from robot.service import RobotService

    caplog.set_level(logging.INFO)
    config = service_config()
    config.data_path.mkdir(parents=True, exist_ok=True)
    (config.data_path / "outbox.sqlite").write_bytes(b"garbage where the outbox was" * 200)
    service = RobotService(config, device_key)
    thread = run_service(service)
    try:
        assert thread.is_alive() and service.session is not None
        [damaged] = events(caplog, "outbox.damaged")
        assert "is damaged" in damaged.getMessage()
        assert events(caplog, "outbox.rebuilt") and list(config.data_path.glob("outbox.sqlite.damaged-*"))
        reasons = service.health().reasons
        assert any(r.startswith("outbox: the outbox was damaged") for r in reasons), reasons
        wait_for(lambda: service.session.counts["written"] >= 1)  # recording goes on
    finally:
        service.signals.stop.set()
        thread.join(30)
    assert service.exit_code == 0


def test_stop_completes_within_the_grace_period_when_a_camera_never_appeared(service_config, device_key, tmp_path):
    import dataclasses

    from robot.service import RobotService

    config = service_config(grace_s=5.0)
    missing = dataclasses.replace(config.camera[0], source=str(tmp_path / "never.mp4"), loop=False)
    config = dataclasses.replace(config, camera=(missing,), serial=()).validate()
    service = RobotService(config, device_key)
    thread = run_service(service)
    time.sleep(config.recorder.clip_seconds + config.recorder.max_source_lag_s + 0.5)  # the first clip was sealed empty
    started = time.monotonic()
    service.signals.stop.set()
    thread.join(config.robot.grace_s + 10)
    assert not thread.is_alive(), "the service did not stop"
    assert time.monotonic() - started < config.robot.grace_s + 5 and service.exit_code == 0

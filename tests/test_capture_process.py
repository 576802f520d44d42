"""Capture in a process of its own: it records while the session's interpreter is stalled, its crash is reported
and it is started again, and it hands over sealed clips and live previews."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from collector.bundle import list_clips, verify_bundle
from collector.capture_process import CaptureFailed, CaptureProcess, PreviewSlot
from collector.recorder import Recorder
from collector.sources import make_sources
from tests.conftest import imu_serial, wait_until, write_video

ROOT = Path(__file__).resolve().parents[1]


def seqs_of(clips: list[Path], stream: str = "imu") -> list[int]:
    out = []
    for clip in sorted(clips, key=lambda p: p.name):
        path = clip / "sensors.parquet"
        if not path.exists():
            continue
        table = pq.read_table(path)
        channels = json.loads(table.schema.metadata[b"knack.channels"])[stream]
        out += [int(v[channels.index("seq")]) for s, v in zip(table.column("stream").to_pylist(), table.column("values").to_pylist()) if s == stream]
    return out


@pytest.fixture
def external_imu(tmp_path):
    """A 1 kHz binary IMU on a pty, simulated by another process (`knack simulate`), so that a stall of this
    test's interpreter stalls only the reader under test, never the device."""
    link = tmp_path / "imu"
    proc = subprocess.Popen(
        [sys.executable, "-m", "knack", "simulate", "serial", "--rate", "1000", "--protocol", "binary", "--link", str(link), "--duration", "120"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert wait_until(link.exists, 30), "the simulator did not start"
    yield str(link)
    proc.terminate()
    proc.wait(10)


def stall_interpreter() -> float:
    """Holds this interpreter's lock for about two seconds: one big-integer power is one bytecode (as a C
    extension that forgets to release the lock, or a huge JSON document decoded, would)."""
    started = time.monotonic()
    _ = 7 ** (6 * 10**6)
    return time.monotonic() - started


def stalled_recording(recorder, config) -> tuple[float, list[Path]]:
    recorder.start()
    assert wait_until(lambda: recorder.sources[0].stats.received > 200, 30)
    stalled = stall_interpreter()
    time.sleep(0.5)
    recorder.close()
    return stalled, list_clips(config.clips_path)


def test_a_stalled_session_loses_no_sample_when_capture_has_its_own_process(make_config, device_key, external_imu):
    config = make_config(serials=[imu_serial(external_imu, "binary", nominal_rate=1000.0)], clip_seconds=1.0)
    stalled, clips = stalled_recording(CaptureProcess(config, device_key), config)
    assert stalled > 1.0
    seqs = seqs_of(clips)
    assert len(seqs) > 1000
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "a sample was lost while the session was stalled"
    assert all(verify_bundle(c).ok for c in clips)


def test_the_same_stall_loses_samples_when_capture_shares_the_interpreter(make_config, device_key, external_imu, tmp_path):
    # The control: what the process above protects against is real (the pty's buffer overflows while the
    # reader thread waits for the interpreter lock).
    config = make_config(serials=[imu_serial(external_imu, "binary", nominal_rate=1000.0)], clip_seconds=1.0)
    stalled, clips = stalled_recording(Recorder(config, make_sources(config), device_key), config)
    seqs = seqs_of(clips)
    missing = (seqs[-1] - seqs[0] + 1) - len(seqs)
    assert stalled > 1.0 and missing > 0


def test_clips_and_previews_cross_from_the_capture_process(tmp_path, make_config, device_key, simulator):
    sim = simulator(rate=200, protocol="binary")
    video = write_video(tmp_path / "cam.mp4", frames=60)
    config = make_config([{"name": "cam", "source": str(video)}], [imu_serial(sim.port, "binary")], clip_seconds=0.5)
    written = []
    capture = CaptureProcess(config, device_key, on_clip=written.append).start()
    assert wait_until(lambda: capture.latest("cam") is not None and capture.latest("imu") is not None, 30)
    frame = capture.latest("cam")
    assert frame.image.shape == (240, 320, 3) and frame.capture_ns > 0
    assert len(capture.latest("imu").values) == 7  # seq and the six axes (the device time is kept apart)
    assert wait_until(capture.sources_ended, 30)
    capture.close(at_ns=capture.files_end_ns())
    assert len(written) >= 3
    assert capture.totals.frames == 60 and capture.totals.clips == len(written)
    assert [c.clip_id for c in written] == sorted(c.name for c in list_clips(config.clips_path))
    assert capture.sources[1].stats.received > 0 and capture.sources[0].ended()
    assert not capture.alive


def test_a_capture_process_that_dies_is_reported_and_started_again_and_keeps_every_sealed_clip(make_config, device_key, simulator):
    sim = simulator(rate=200, protocol="binary")
    config = make_config(serials=[imu_serial(sim.port, "binary")], clip_seconds=0.5)
    written, problems = [], []
    capture = CaptureProcess(config, device_key, on_clip=written.append, on_problem=problems.append).start()
    assert wait_until(lambda: len(written) >= 2, 30)
    os.kill(capture._process.pid, signal.SIGKILL)
    assert wait_until(lambda: problems and problems[-1] is None, 60), problems
    assert "killed by SIGKILL" in problems[0] and "restarted" in problems[0]
    before = len(written)
    assert wait_until(lambda: len(written) >= before + 2, 30), "no clip was cut after the restart"
    capture.close()
    assert capture.restarts == 1
    ids = [c.clip_id for c in written]
    assert len(ids) == len(set(ids))
    on_disk = list_clips(config.clips_path)
    assert sorted(ids) == sorted(c.name for c in on_disk)  # the partial clip of the killed process is gone, nothing else
    assert all(verify_bundle(c).ok for c in on_disk)


def tasks_of(clips: list[Path]) -> list[str]:
    return [json.loads((c / "manifest.json").read_text())["task"] for c in sorted(clips, key=lambda p: p.name)]


def test_a_change_of_task_crosses_to_the_capture_process_and_splits_the_clip(make_config, device_key, simulator):
    sim = simulator(rate=200, protocol="binary")
    config = make_config(serials=[imu_serial(sim.port, "binary")], clip_seconds=0, task="solder a header onto a PCB")
    written = []
    capture = CaptureProcess(config, device_key, on_clip=written.append).start()
    assert wait_until(lambda: capture.totals.samples > 40, 30)
    capture.set_task("clean the soldering tip")
    before = capture.totals.samples
    assert wait_until(lambda: capture.totals.samples > before + 40, 30)
    capture.close()
    assert tasks_of([c.path for c in written]) == ["solder a header onto a PCB", "clean the soldering tip"]
    assert all(verify_bundle(c.path).ok for c in written)


def test_a_restarted_capture_process_records_under_the_task_named_last(make_config, device_key, simulator):
    sim = simulator(rate=200, protocol="binary")
    config = make_config(serials=[imu_serial(sim.port, "binary")], clip_seconds=0.5)
    written, problems = [], []
    capture = CaptureProcess(config, device_key, on_clip=written.append, on_problem=problems.append).start()
    capture.set_task("debone a chicken thigh")
    assert wait_until(lambda: len(written) >= 2, 30)
    os.kill(capture._process.pid, signal.SIGKILL)
    assert wait_until(lambda: problems and problems[-1] is None, 60), problems
    before = len(written)
    assert wait_until(lambda: len(written) >= before + 2, 30), "no clip was cut after the restart"
    capture.close()
    assert set(tasks_of([c.path for c in written[1:]])) == {"debone a chicken thigh"}  # the first clip may precede it


def test_a_capture_process_that_cannot_start_says_why(make_config, device_key, tmp_path):
    config = make_config(serials=[imu_serial(str(tmp_path / "no-such-port"), "binary")])
    config.clips_path.parent.mkdir(parents=True, exist_ok=True)
    config.clips_path.write_text("not a directory")  # where its clips should go
    with pytest.raises(CaptureFailed, match="File exists"):
        CaptureProcess(config, device_key).start()


def test_a_preview_is_never_read_torn():
    import tempfile

    path = Path(tempfile.mkdtemp()) / "slot"
    writer = PreviewSlot(path, 64 * 48 * 3, create=True)
    reader = PreviewSlot(path, 0, create=False)
    assert reader.read() is None
    stop = threading.Event()

    def write():
        level = 0
        while not stop.is_set():
            writer.write(np.full((48, 64, 3), level % 256, np.uint8), level)
            level += 1

    thread = threading.Thread(target=write)
    thread.start()
    try:
        for _ in range(2000):
            found = reader.read()
            if found is not None:
                image, capture_ns = found
                assert image.min() == image.max() == capture_ns % 256
    finally:
        stop.set()
        thread.join()


def test_one_recorder_per_clips_directory_and_a_second_one_says_who_holds_it(tmp_path):
    from collector.recorder import RecorderBusy, take_clips_lock

    first = take_clips_lock(tmp_path)
    with pytest.raises(RecorderBusy, match=f"pid {os.getpid()}"):
        take_clips_lock(tmp_path, wait_s=0.3)
    first.close()  # as when the first recorder closes, or its process dies
    take_clips_lock(tmp_path, wait_s=0.3).close()


def test_knack_record_beside_a_running_recorder_is_one_line_and_exit_2(tmp_path, simulator):
    from collector.recorder import take_clips_lock

    sim = simulator(rate=100, protocol="binary")
    data = tmp_path / "data"
    (data / "clips").mkdir(parents=True)
    config = tmp_path / "knack.toml"
    config.write_text(
        f'data_dir = "{data}"\n[[serial]]\nname = "imu"\nport = "{sim.port}"\nprotocol = "binary"\nbinary_format = "<QI6f"\n'
        'binary_fields = ["t_us", "seq", "ax", "ay", "az", "gx", "gy", "gz"]\n'
    )
    held = take_clips_lock(data / "clips")
    try:
        env = dict(os.environ, KNACK_DEVICE_PASSWORD="pw", KNACK_CONFIG=str(config))
        out = subprocess.run([sys.executable, "-m", "knack", "record", "--duration", "1"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    finally:
        held.close()
    assert out.returncode == 2, out.stderr
    assert "knack: error: another recorder (pid" in out.stderr and "Traceback" not in out.stderr


def test_a_restart_that_cannot_start_says_why_and_is_tried_again(make_config, device_key, simulator):
    from collector.recorder import take_clips_lock

    sim = simulator(rate=200, protocol="binary")
    config = make_config(serials=[imu_serial(sim.port, "binary")], clip_seconds=0.5)
    written, problems = [], []
    capture = CaptureProcess(config, device_key, on_clip=written.append, on_problem=problems.append).start()
    try:
        assert wait_until(lambda: len(written) >= 1, 30)
        os.kill(capture._process.pid, signal.SIGKILL)
        capture._process.join()
        held = take_clips_lock(config.clips_path, wait_s=5)  # as a second recorder would: the restart must wait for it
        try:
            assert wait_until(lambda: any(p and "could not start again: another recorder" in p for p in problems), 60), problems
        finally:
            held.close()
        assert wait_until(lambda: problems[-1] is None, 90), problems  # it is tried again, and runs once it can
        before = len(written)
        assert wait_until(lambda: len(written) > before, 30)
    finally:
        capture.close()

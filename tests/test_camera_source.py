"""The OpenCV camera source on real video files: timestamps, measured rate, file end, and a source that appears late."""

import queue
import shutil
import threading
import time

from collector.clock import Clock
from collector.config import CameraConfig
from collector.sources.camera import CameraSource, source_kind
from tests.conftest import frame_number, wait_until, write_video


def frames_of(source, timeout=10.0):
    out = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            out.append(source.items.get(timeout=0.1))
        except queue.Empty:
            if source.ended():
                break
    return out


def test_source_strings_are_told_apart():
    assert source_kind("0") == "device"
    assert source_kind("/dev/video2") == "device"
    assert source_kind("/dev/knack/bench-cam") == "device"
    assert source_kind("rtsp://10.0.0.5/stream") == "stream"
    assert source_kind("clip.mp4") == "file"


def test_file_frames_are_paced_at_the_nominal_rate_with_monotonic_times(video_file):
    source = CameraSource(CameraConfig(name="cam", source=str(video_file), fps=30.0))
    source.start(Clock())
    frames = frames_of(source)
    source.stop()
    assert len(frames) == 45
    intervals = [(b.capture_ns - a.capture_ns) / 1e6 for a, b in zip(frames, frames[1:])]
    assert all(i > 0 for i in intervals)
    assert 31 < sum(intervals) / len(intervals) < 36  # 33.3 ms at 30 fps
    assert source.stats.state == "ended" and source.stats.dropped == 0
    assert frames[0].image.shape == (240, 320, 3)
    assert [frame_number(f.image) for f in frames] == list(range(45))  # in order, none skipped
    assert 27 < source.stats.rate < 33


def test_a_file_that_ends_is_reported_once_and_the_source_ends(video_file, caplog):
    source = CameraSource(CameraConfig(name="cam", source=str(video_file), fps=120.0))
    with caplog.at_level("INFO", logger="knack.capture"):
        source.start(Clock())
        assert wait_until(source.ended, 10)
    source.stop()
    assert [r.getMessage() for r in caplog.records if "ended" in r.getMessage()] == [f"camera cam: video file {video_file} ended after 45 frames"]
    assert source.ended_ns is not None


def test_looping_file_keeps_delivering(video_file):
    source = CameraSource(CameraConfig(name="cam", source=str(video_file), fps=200.0, loop=True))
    source.start(Clock())
    time.sleep(0.8)
    source.stop()
    assert source.stats.received + source.stats.dropped > 60 and not source.stats.state == "ended"


def test_a_missing_camera_is_retried_with_backoff_and_the_gap_recorded(tmp_path, caplog):
    path = tmp_path / "late.mp4"
    source = CameraSource(CameraConfig(name="cam", source=str(path), fps=60.0))
    with caplog.at_level("WARNING", logger="knack.capture"):
        source.start(Clock())
        assert wait_until(lambda: source.stats.state.startswith("waiting"), 3)
        time.sleep(0.7)
        write_video(tmp_path / "tmp.mp4", frames=10)
        shutil.move(tmp_path / "tmp.mp4", path)  # the camera comes back
        frames = frames_of(source)
    source.stop()
    assert len(frames) == 10
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings[0] == f"camera cam: {path} does not exist; retrying with backoff, other streams keep recording"
    assert sum("does not exist" in w for w in warnings) == 1  # said once, not at every retry
    assert any("back after" in w for w in warnings)
    [gap] = source.take_gaps()
    assert gap.end_ns is not None and gap.end_ns - gap.start_ns > 0.5e9
    assert gap.end_ns <= frames[0].capture_ns


def test_an_unplugged_device_path_is_waited_for(tmp_path):
    source = CameraSource(CameraConfig(name="cam", source="/dev/knack/not-plugged-in"))
    source.start(Clock())
    assert wait_until(lambda: "unplugged" in source.stats.state, 3)
    source.stop()
    assert source.ended()


def test_a_stream_camera_that_vanishes_is_reopened_with_backoff_and_the_gap_recorded(tmp_path, caplog):
    import functools
    import http.server

    video = write_video(tmp_path / "cam.mp4", frames=20)
    grants = threading.Semaphore(1)  # each grant lets the "camera" answer one connection

    class Camera(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            if not grants.acquire(blocking=False):
                self.send_error(503, "camera offline")
                return
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Camera, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    source = CameraSource(CameraConfig(name="cam", source=f"http://127.0.0.1:{server.server_address[1]}/{video.name}"))
    try:
        with caplog.at_level("WARNING", logger="knack.capture"):
            source.start(Clock())
            assert wait_until(lambda: source.stats.received == 20 and source.stats.state.startswith("waiting"), 10)
            time.sleep(0.8)  # offline for a while: retried with backoff, said once
            grants.release()
            assert wait_until(lambda: source.stats.received == 40, 10)
    finally:
        source.stop()
        server.shutdown()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("stopped delivering frames" in m for m in messages) >= 1
    assert any(m.startswith("camera cam is back after") for m in messages)
    gaps = source.take_gaps()
    assert gaps and gaps[0].end_ns is not None and gaps[0].end_ns - gaps[0].start_ns > 0.5e9


def test_late_counts_lost_frames_not_a_reader_that_catches_up():
    from collector.sources.camera import LateCounter

    period = 33_333_333

    def lost(times_in_periods, slack=2):
        counter = LateCounter(period, slack)
        return sum(counter.frame(int(t * period)) for t in times_in_periods)

    assert lost(range(100)) == 0  # on time
    # A 4-frame stall, then the driver's buffered frames in quick succession: nothing was lost.
    assert lost([*range(10), 14, 14.1, 14.2, 14.3, *range(15, 40)]) == 0
    # Every other frame missing for 10 s: 150 of 300 lost, less the slack.
    assert lost(range(0, 300, 2)) == 148 - 2  # (the last gap is judged by a frame that never came)
    # A camera a little faster than nominal never counts anything.
    assert lost([i * 0.99 for i in range(300)]) == 0
    # Lost frames are counted once, however long the recording goes on afterwards.
    assert lost([*range(10), *range(20, 200)]) == 10 - 2

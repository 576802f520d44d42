"""The recorder: drains every source's queue, cuts the streams into clips on one clock, and writes clip bundles.

Frames are encoded into the clip's partial directory as they arrive; sensor rows are kept until the clip
closes. A finisher thread writes the parquet files, signs the manifest and renames the bundle into place,
so sealing one clip never stalls capture of the next.
"""

from __future__ import annotations

import bisect
import fcntl
import logging
import os
import platform
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import pyarrow as pa
import pyarrow.parquet as pq

import collector
from collector.bundle import FRAMES, PARTIAL_PREFIX, SENSORS, clean_task, new_clip_id, recover_partials, seal, video_name, write_manifest, write_sensor_log
from collector.clock import Clock
from collector.config import Config
from collector.devices import usb_id_of
from collector.identity import DeviceKey
from collector.segmenter import GapBook, Segmenter, Span
from collector.sources.base import Frame, Gap, Sample, Source, StreamStats
from collector.video import VideoWriter, choose_encoder

log = logging.getLogger("knack.recorder")

FINISH_RETRY_S = 5.0


@dataclass
class ClipBuffer:
    span: Span
    clip_id: str
    partial: Path
    stats_at_start: dict[str, StreamStats]
    writers: dict[str, VideoWriter] = field(default_factory=dict)
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)
    frame_counts: Counter = field(default_factory=Counter)
    frames: list[tuple[str, int, int]] = field(default_factory=list)  # camera, frame index, capture ns
    samples: dict[str, list[Sample]] = field(default_factory=dict)
    marks: list[dict] = field(default_factory=list)
    task: str = ""  # the task in force where the clip starts (one per clip: a change of task splits it)


@dataclass(frozen=True)
class ClipWritten:
    clip_id: str
    path: Path
    frames: int
    samples: int


@dataclass
class Totals:
    frames: int = 0
    samples: int = 0
    clips: int = 0
    failed: int = 0


LOCK_NAME = ".recorder.lock"
LOCK_WAIT_S = 10.0  # an orphaned capture process seals its last clip in well under this


class RecorderBusy(RuntimeError):
    """Another recorder writes clips into the same directory."""


def take_clips_lock(clips_dir: Path, wait_s: float = LOCK_WAIT_S):
    """One recorder per clips directory: a second one would remove the first one's clips in the making as what
    a crash left. Waits a while for one that is still sealing its last clips (a capture process whose session
    was killed finishes them before it exits)."""
    handle = open(clips_dir / LOCK_NAME, "a+")
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError:
            if time.monotonic() >= deadline:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                handle.close()
                raise RecorderBusy(f"another recorder ({holder}) is writing clips in {clips_dir}: one recorder per data directory") from None
            time.sleep(0.1)
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}")
    handle.flush()
    return handle


def files_end_ns(sources) -> int | None:
    """When the last video-file camera ran out, so a recording "until the file ends" stops there."""
    ends = [getattr(s, "ended_ns", None) for s in sources if s.kind == "camera"]
    return max(ends) if ends and None not in ends else None


def cameras_ended(sources) -> bool:
    """Every camera was a video file and each has ended."""
    return all(s.ended() for s in sources if s.kind == "camera") and any(s.kind == "camera" for s in sources)


class Recorder:
    problem: str | None = None  # in threads of the session's process, capture has no crash of its own to report

    def __init__(self, config: Config, sources: list[Source], key: DeviceKey, on_clip: Callable[[ClipWritten], None] | None = None):
        self.config = config
        self.sources = sources
        self.key = key
        self.on_clip = on_clip
        self.clock = Clock()
        self.clips_dir = config.clips_path
        self.segmenter = Segmenter(int(config.recorder.clip_seconds * 1e9))
        self.encoder = choose_encoder(config.recorder.video_codec)
        self.totals = Totals()
        self.contributor = config.identity.contributor or key.address
        self._buffers: dict[int, ClipBuffer] = {}
        self._watermarks: dict[str, int] = {}
        self._gaps = GapBook()
        self._commands: queue.Queue = queue.Queue()
        self._finish: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.recovered: list[str] = []
        self.stream_info: dict[str, dict] = {}
        self._last_io_error = 0.0
        self._last_bug = 0.0
        self._failing: set[str] = set()
        self._latest: dict[str, Frame | Sample] = {}
        self._stop_at_cameras_end = False
        self._lock = None
        self.task = clean_task(config.recorder.task)  # the latest task asked for (what the app shows)
        self._tasks: list[tuple[int, str]] = [(0, self.task)]  # (from this capture time on, task), in time order

    # --- control (any thread) -------------------------------------------------------------------
    def start(self, record: bool = True) -> Recorder:
        self.clips_dir.mkdir(parents=True, exist_ok=True)
        self._lock = take_clips_lock(self.clips_dir)
        self.recovered = recover_partials(self.clips_dir)
        for source in self.sources:
            self.stream_info[source.name] = {"usb": usb_id_of(str(source.describe().get("source", "")))}
        # The first seal runs beside the next clip's first frames. Done there for the first time, pyarrow's Parquet
        # writer setup (about 0.3 s) and the signing code's import held the camera back 25-35 ms, more than half a
        # frame at 30 fps (a clip a dataset must then leave out): both are done once here, before capture.
        pq.write_table(pa.table({"warm_up": pa.array([0], pa.int64())}), pa.BufferOutputStream())
        self.key.sign(b"warm-up")
        if record:
            # Stamped before the sources start, so their first frame and sample fall inside the first clip.
            self._commands.put(("start", self.clock.now_ns(), None))
        for source in self.sources:
            source.start(self.clock)
        self._threads = [
            threading.Thread(target=self._loop, name="knack-recorder", daemon=True),
            threading.Thread(target=self._finisher, name="knack-finisher", daemon=True),
        ]
        for t in self._threads:
            t.start()
        return self

    # `at_ns`: when the operator asked (a command relayed from another process); default now.
    def start_clip(self, at_ns: int | None = None) -> None:
        self._commands.put(("start", at_ns or self.clock.now_ns(), None))

    def stop_clip(self, at_ns: int | None = None) -> None:
        self._commands.put(("stop", at_ns or self.clock.now_ns(), None))

    def split(self, at_ns: int | None = None) -> None:
        self._commands.put(("split", at_ns or self.clock.now_ns(), None))

    def mark(self, label: str = "mark", at_ns: int | None = None) -> None:
        self._commands.put(("mark", at_ns or self.clock.now_ns(), label))

    def set_task(self, text: str, at_ns: int | None = None) -> None:
        """The task from now on (or from `at_ns`): a clip being recorded is split there, so that each clip carries
        the one task it was recorded under; when idle, the next clip has it. Raises ValueError for text that
        cannot be a task (over 200 characters, control characters)."""
        self.task = clean_task(text)
        self._commands.put(("task", at_ns or self.clock.now_ns(), self.task))

    def stop_at_cameras_end(self) -> None:
        """Recording stops where the last video-file camera ended, as soon as it has (`record --until-end`, the
        demo): decided here, where the items are routed, so that no clip of what came after is begun."""
        self._stop_at_cameras_end = True

    def latest(self, name: str) -> Frame | Sample | None:
        """The last frame or sample the recorder took from source `name` (for a live view; never blocks capture)."""
        return self._latest.get(name)

    def files_end_ns(self) -> int | None:
        return files_end_ns(self.sources)

    def sources_ended(self) -> bool:
        return cameras_ended(self.sources)

    @property
    def recording(self) -> bool:
        """Whether clips are being cut (between the operator's start and stop)."""
        return self.segmenter.recording

    def close(self, at_ns: int | None = None) -> Totals:
        """Ends the current clip (now, or at `at_ns`), seals every open clip, and stops the sources."""
        stop_ns = at_ns or self.clock.now_ns()
        self._commands.put(("stop", stop_ns, None))
        # Let items captured before the stop reach the recorder before the sources go away.
        deadline = time.monotonic() + self.config.recorder.max_source_lag_s
        while time.monotonic() < deadline and any(
            self._watermarks.get(s.name, 0) < stop_ns for s in self.sources if s.stats.state == "recording" and not s.ended()
        ):
            time.sleep(0.005)
        for source in self.sources:
            source.stop()
        self._stop.set()
        for t in self._threads:
            t.join()
        if self._lock is not None:
            self._lock.close()  # releases the lock: the next recorder may clean up after this one
            self._lock = None
        return self.totals

    # --- recorder thread ------------------------------------------------------------------------
    def _loop(self) -> None:
        lag_ns = int(self.config.recorder.max_source_lag_s * 1e9)
        while True:
            try:
                if self._step(lag_ns):
                    return
            except OSError as exc:
                self._io_error(exc)
                time.sleep(0.05)
            except Exception as exc:  # a bug here must neither stop recording silently nor leave close() waiting
                if self._stop.is_set():
                    log.error("the recorder failed while stopping (%s: %s); clips still open are sealed as they are", type(exc).__name__, exc)
                    self._seal_what_is_open()
                    return
                now = time.monotonic()
                if now - self._last_bug >= 1.0:
                    log.exception("the recorder hit an unexpected error (%s: %s); it goes on with the next items", type(exc).__name__, exc)
                    self._last_bug = now
                time.sleep(0.05)

    def _seal_what_is_open(self) -> None:
        try:
            self._close_spans(self.clock.now_ns() + 1, final=True)
        except Exception as exc:
            log.error("open clips could not be handed over for sealing (%s: %s); their partial directories are kept", type(exc).__name__, exc)
        self._finish.put(None)

    def _io_error(self, exc: OSError) -> None:
        # A full or failing disk: said once a second at most; the sources keep running and writing is retried.
        now = time.monotonic()
        if now - self._last_io_error >= 1.0:
            log.error("cannot write clip data under %s (%s); frames are dropped (and counted) until it works again", self.clips_dir, exc)
            self._last_io_error = now

    def _step(self, lag_ns: int) -> bool:
        """One pass over commands and queues; True when the recorder has finished."""
        stopping = self._stop.is_set()
        if self._stop_at_cameras_end and self.segmenter.recording and self.sources_ended():
            self._stop_at_cameras_end = False
            self._commands.put(("stop", self.files_end_ns(), None))
        self._run_commands()
        moved = 0
        for source in self.sources:
            moved += self._drain(source)
            while stopping and self._drain(source):
                pass  # the sources have stopped: take everything they captured
        if stopping:
            # Every source has stopped: nothing earlier than now can still arrive.
            self._close_spans(self.clock.now_ns() + 1, final=True)
            self._finish.put(None)
            return True
        self._close_spans(self._watermark(lag_ns))
        if not moved:
            time.sleep(0.002)
        return False

    def _run_commands(self) -> None:
        while True:
            try:
                command, t_ns, arg = self._commands.get_nowait()
            except queue.Empty:
                return
            if command == "start":
                self.segmenter.start(t_ns)
            elif command == "stop":
                self.segmenter.stop(t_ns)
            elif command == "split":
                self.segmenter.split(t_ns)
            elif command == "mark":
                span = self.segmenter.route(t_ns)
                if span is not None:
                    self._buffer(span).marks.append({"t_ns": t_ns, "label": arg})
            elif command == "task" and arg != self._task_at(t_ns):  # the same task again cuts nothing
                bisect.insort(self._tasks, (t_ns, arg), key=lambda change: change[0])
                self.segmenter.split(t_ns)  # nothing to split while idle

    def _task_index(self, t_ns: int) -> int:
        """Where in `_tasks` the task in force at capture time `t_ns` is."""
        return max(0, bisect.bisect_right(self._tasks, t_ns, key=lambda change: change[0]) - 1)

    def _task_at(self, t_ns: int) -> str:
        return self._tasks[self._task_index(t_ns)][1]

    def _drain(self, source: Source, limit: int = 2000) -> int:
        moved = 0
        while moved < limit:
            try:
                item = source.items.get_nowait()
            except queue.Empty:
                break
            moved += 1
            self._watermarks[source.name] = item.capture_ns
            self._latest[source.name] = item
            span = self.segmenter.route(item.capture_ns)
            if span is None:
                if self.segmenter.spans and item.capture_ns < self.segmenter.spans[0].start_ns:
                    source.stats.dropped += 1  # arrived after its clip was sealed (later than max_source_lag_s)
                continue
            try:
                buf = self._buffer(span)
                if isinstance(item, Frame):
                    self._write_frame(buf, source, item)
            except OSError as exc:
                source.stats.dropped += 1
                self._io_error(exc)
                continue
            if isinstance(item, Frame):
                self.totals.frames += 1
            else:
                buf.samples.setdefault(item.stream, []).append(item)
                self.totals.samples += 1
        return moved

    def _watermark(self, lag_ns: int) -> int:
        """Everything captured before this time has reached the recorder (or is late beyond max_source_lag_s)."""
        now = self.clock.now_ns()
        live = [self._watermarks.get(s.name, 0) for s in self.sources if s.stats.state == "recording" and not s.ended()]
        fallback = now - lag_ns
        return max(fallback, min(live)) if live else fallback

    def _buffer(self, span: Span) -> ClipBuffer:
        buf = self._buffers.get(id(span))
        if buf is None:
            clip_id = new_clip_id(self.clock.wall_ns(span.start_ns) // 1_000_000)
            partial = self.clips_dir / f"{PARTIAL_PREFIX}{clip_id}"
            partial.mkdir(parents=True)
            buf = ClipBuffer(span, clip_id, partial, {s.name: s.stats.snapshot() for s in self.sources})
            self._buffers[id(span)] = buf
        return buf

    def _write_frame(self, buf: ClipBuffer, source: Source, frame: Frame) -> None:
        writer = buf.writers.get(source.name)
        height, width = frame.image.shape[:2]
        if writer is None:
            name = video_name(source.name, sum(s.kind == "camera" for s in self.sources))
            fps = source.describe().get("nominal_rate") or 30.0
            writer = VideoWriter(buf.partial / name, fps, width, height, self.encoder)
            buf.writers[source.name] = writer
            buf.sizes[source.name] = (width, height)
        image = frame.image
        if (width, height) != buf.sizes[source.name]:
            # A camera that renegotiated its size mid-clip: keep one size per video file.
            image = cv2.resize(image, buf.sizes[source.name])
        writer.write(image)
        index = buf.frame_counts[source.name]
        buf.frame_counts[source.name] += 1
        buf.frames.append((source.name, index, frame.capture_ns))

    def _close_spans(self, watermark_ns: int, final: bool = False) -> None:
        spans = self.segmenter.closable(watermark_ns)
        if final:
            spans += [s for s in self.segmenter.spans]
            self.segmenter.spans = []
        for span in spans:
            buf = self._buffers.pop(id(span), None)
            if buf is None:
                continue  # a clip in which nothing arrived is not written
            if span.end_ns is None:
                span.end_ns = max([t for _, _, t in buf.frames] + [s.capture_ns for v in buf.samples.values() for s in v], default=span.start_ns) + 1
            stats = {s.name: s.stats.snapshot() for s in self.sources}
            self._gaps.update([g for s in self.sources for g in s.take_gaps()])
            buf.task = self._task_at(span.start_ns)
            self._finish.put((buf, stats, self._gaps.overlapping(span)))
        if spans:
            # Later clips start where the open ones do, or after the last one just sealed.
            sealed_until = max(s.end_ns if s.end_ns is not None else s.start_ns for s in spans)
            kept_from = min((s.start_ns for s in self.segmenter.spans), default=sealed_until)
            self._gaps.forget_before(kept_from)
            del self._tasks[: self._task_index(kept_from)]  # changes that no clip still to be sealed starts under

    # --- finisher thread ------------------------------------------------------------------------
    def _finisher(self) -> None:
        # A clip that fails to seal (a full disk) is retried until it works or the recorder closes.
        retry: list = []
        while True:
            try:
                job = self._finish.get(timeout=FINISH_RETRY_S if retry else None)
            except queue.Empty:
                job = "retry"
            closing = job is None
            if job not in (None, "retry"):
                retry.append(job)
            retry = [j for j in retry if not self._try_finish(j, last_try=closing)]
            if closing:
                return

    def _try_finish(self, job, last_try: bool) -> bool:
        """True when the job is done with: sealed, or given up on at close."""
        buf, stats, gaps = job
        try:
            written = self._finish_clip(buf, stats, gaps)
        except OSError as exc:
            if last_try:
                self.totals.failed += 1
                log.error("clip %s could not be written (%s); its partial directory is kept and handled on the next start", buf.clip_id, exc)
                return True
            if buf.clip_id not in self._failing:
                self._failing.add(buf.clip_id)
                log.error("clip %s could not be written (%s); retrying every %g s", buf.clip_id, exc, FINISH_RETRY_S)
            return False
        self.totals.clips += 1
        if self.on_clip is not None:
            try:
                self.on_clip(written)
            except Exception:
                log.exception("clip %s: handler failed", buf.clip_id)
        return True

    def _finish_clip(self, buf: ClipBuffer, stats: dict[str, StreamStats], gaps: list[Gap]) -> ClipWritten:
        while buf.writers:  # each closed once: a retry after a failed close goes on with the rest of the clip
            buf.writers.popitem()[1].close()
        self._write_frames_table(buf)
        n_samples = self._write_samples_table(buf)
        manifest = self._manifest(buf, stats, gaps)
        write_manifest(buf.partial, manifest, self.key)
        final = seal(buf.partial, self.clips_dir / buf.clip_id)
        return ClipWritten(buf.clip_id, final, len(buf.frames), n_samples)

    def _write_frames_table(self, buf: ClipBuffer) -> None:
        if not buf.frames:
            return
        cameras, indices, times = zip(*buf.frames)
        table = pa.table(
            {
                "camera": pa.array(cameras, pa.string()),
                "frame_index": pa.array(indices, pa.int64()),
                "capture_ns": pa.array(times, pa.int64()),
            }
        )
        pq.write_table(table, buf.partial / FRAMES)

    def _write_samples_table(self, buf: ClipBuffer) -> int:
        rows = [s for stream in sorted(buf.samples) for s in buf.samples[stream]]
        if not rows:
            return 0
        channels = {s.name: list(getattr(s, "channels", ())) for s in self.sources if s.kind != "camera"}
        write_sensor_log(
            buf.partial / SENSORS, [s.stream for s in rows], [s.capture_ns for s in rows], [s.device_ns for s in rows], [s.values for s in rows], channels
        )
        return len(rows)

    def _manifest(self, buf: ClipBuffer, stats: dict[str, StreamStats], gaps: list[Gap]) -> dict:
        span = buf.span
        streams = []
        for source in self.sources:
            before, after = buf.stats_at_start[source.name], stats[source.name]
            info = dict(source.describe())
            info.setdefault("usb", self.stream_info.get(source.name, {}).get("usb"))
            times = (
                [t for cam, _, t in buf.frames if cam == source.name] if source.kind == "camera" else [s.capture_ns for s in buf.samples.get(source.name, [])]
            )
            info.update(
                {
                    "count": len(times),
                    "measured_rate": round((len(times) - 1) / ((times[-1] - times[0]) / 1e9), 3) if len(times) > 1 and times[-1] > times[0] else None,
                    "dropped": after.dropped - before.dropped,
                    "late": after.late - before.late,
                    "lost": after.lost - before.lost,
                    "parse_errors": dict(after.errors - before.errors),
                    "gaps": [{"start_ns": g.start_ns, "end_ns": g.end_ns, "reason": g.reason} for g in gaps if g.stream == source.name],
                }
            )
            if source.kind != "camera":  # serial sensors and joint states
                info["channels"] = list(getattr(source, "channels", ()))
            streams.append(info)
        return {
            "clip_id": buf.clip_id,
            "device_id": self.key.address,
            "contributor": self.contributor,
            "start": {"utc": self.clock.utc(span.start_ns), "mono_ns": span.start_ns},
            "end": {"utc": self.clock.utc(span.end_ns), "mono_ns": span.end_ns},
            "duration_s": round((span.end_ns - span.start_ns) / 1e9, 6),
            "task": buf.task,
            "streams": streams,
            "marks": buf.marks,
            "recorder": {
                "knack": collector.__version__,
                "platform": platform.platform(),
                "video_codec": self.encoder.codec,
                "video_encoder": self.encoder.name,
            },
            "labels": None,
            "quality": None,
            "privacy": None,
            "decision": None,
        }

"""Capture in a process of its own.

Sources, clock, segmenter and the video encoder run in a child process; labeling, content addressing, the chain
and the app stay in the parent. They share no interpreter lock, so a labeler decoding JSON, a UnixFS build or
the embedded EVM can no longer starve a serial reader until its port's buffer overflows. What crosses:

- sealed clips, as paths: the bundle on disk is the hand-over (the labeler reads its files, nothing is pickled
  but the ClipWritten record);
- the latest camera frame, for live previews, through a memory-mapped file per camera in /dev/shm;
- counters, the latest sensor values and commands, as small messages over a pipe; the child's log records too.

`CaptureProcess` has the Recorder's interface, so the session, the app and the robot use either. A child that
dies (a crash in a driver, the OOM killer) is reported and started again; the clip it had open is lost with
it (its partial directory is removed on the next start, as after a power cut), every sealed clip is kept. A
child whose parent is gone seals what is open and exits.
"""

from __future__ import annotations

import dataclasses
import logging
import mmap
import multiprocessing
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from collector.bundle import clean_task
from collector.clock import Clock
from collector.config import Config
from collector.identity import DeviceKey
from collector.recorder import ClipWritten, Recorder, Totals, cameras_ended, files_end_ns
from collector.sources import make_sources
from collector.sources.base import Frame, Sample, StreamStats

log = logging.getLogger("knack.capture")

STATUS_EVERY_S = 0.1
START_TIMEOUT_S = 120.0  # a cold start imports OpenCV, PyAV and NumPy in a fresh interpreter
CLOSE_TIMEOUT_S = 120.0  # the recorder's close: the source lag, then the last clips sealed
RESTART_DELAYS_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
STABLE_S = 60.0  # a child that ran this long resets the restart back-off

_HEADER = np.dtype([("seq", "<u8"), ("capture_ns", "<i8"), ("height", "<i4"), ("width", "<i4"), ("channels", "<i4"), ("pad", "<i4")])


class CaptureFailed(RuntimeError):
    """The capture process could not start (its sources or its encoder would not open)."""


# --- live previews ----------------------------------------------------------------------------------
class PreviewSlot:
    """One camera's latest frame in a memory-mapped file, written by the capture process, read by the app.

    A sequence number makes a torn read detectable: odd while the writer copies, even when done; a reader
    keeps a copy only if the number was even and unchanged around it."""

    def __init__(self, path: Path, capacity: int, create: bool):
        self.path = path
        size = _HEADER.itemsize + capacity
        if create:
            with open(path, "wb") as f:
                f.truncate(size)
        with open(path, "r+b" if create else "rb") as f:
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_WRITE if create else mmap.ACCESS_READ)
        self.capacity = len(self._map) - _HEADER.itemsize
        self._header = np.ndarray((1,), _HEADER, self._map, 0)

    def write(self, image: np.ndarray, capture_ns: int) -> bool:
        if image.nbytes > self.capacity:
            return False
        h = self._header[0]
        seq = int(h["seq"])
        self._header["seq"] = seq + 1
        self._map[_HEADER.itemsize : _HEADER.itemsize + image.nbytes] = np.ascontiguousarray(image).tobytes()
        channels = image.shape[2] if image.ndim == 3 else 1
        self._header[["capture_ns", "height", "width", "channels"]] = (capture_ns, image.shape[0], image.shape[1], channels)
        self._header["seq"] = seq + 2
        return True

    def read(self) -> tuple[np.ndarray, int] | None:
        for _ in range(3):
            before = self._header[0].copy()
            if before["seq"] == 0 or before["seq"] % 2:
                if before["seq"] == 0:
                    return None
                time.sleep(0.001)
                continue
            shape = (int(before["height"]), int(before["width"])) + ((int(before["channels"]),) if before["channels"] > 1 else ())
            count = int(np.prod(shape))
            if count > self.capacity:
                return None
            image = np.frombuffer(self._map, np.uint8, count, _HEADER.itemsize).reshape(shape).copy()
            if self._header[0]["seq"] == before["seq"]:
                return image, int(before["capture_ns"])
        return None

    def close(self) -> None:
        try:
            self._map.close()
        except (BufferError, ValueError):  # a view of it is still alive somewhere: the mapping goes with the process
            pass


def _preview_dir() -> Path:
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())
    return Path(tempfile.mkdtemp(prefix="knack-preview-", dir=base))


# --- the child --------------------------------------------------------------------------------------
class _PipeLogHandler(logging.Handler):
    def __init__(self, send: Callable[[tuple], None]):
        super().__init__()
        self.send = send

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.exc_info:
                text += "\n" + logging.Formatter().formatException(record.exc_info)
            self.send(("log", record.name, record.levelno, text))
        except Exception:  # the parent is gone: nothing left to tell
            pass


def _child(conn, config: Config, key: DeviceKey, record: bool, preview_dir: str) -> None:
    lock = threading.Lock()
    gone = threading.Event()

    def send(message: tuple) -> None:
        if gone.is_set():
            return
        try:
            with lock:
                conn.send(message)
        except (OSError, EOFError, BrokenPipeError):
            gone.set()

    # The session decides when capture stops: a Ctrl-C in a terminal or systemd's SIGTERM reaches every process
    # of the group, and the session then closes capture itself, after the clip's last items arrived.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    root = logging.getLogger()
    root.handlers[:] = [_PipeLogHandler(send)]
    root.setLevel(logging.INFO)
    try:
        recorder = Recorder(config, make_sources(config), key, on_clip=lambda clip: send(("clip", clip)))
        recorder.start(record=record)
    except BaseException as exc:
        send(("failed", str(exc) or type(exc).__name__))
        return
    send(("started", recorder.recovered))
    slots: dict[str, PreviewSlot] = {}
    shown: dict[str, int] = {}
    stop = threading.Event()

    def status(previews: bool = True) -> tuple:
        out = {}
        for source in recorder.sources:
            latest = recorder.latest(source.name)
            values = None
            if previews and isinstance(latest, Frame) and shown.get(source.name) != latest.capture_ns:
                slot = slots.get(source.name)
                if slot is None or latest.image.nbytes > slot.capacity:
                    path = Path(preview_dir) / f"{source.name}.{len(slots)}-{latest.image.nbytes}"
                    slot = slots[source.name] = PreviewSlot(path, latest.image.nbytes, create=True)
                slot.write(latest.image, latest.capture_ns)
                shown[source.name] = latest.capture_ns
            elif isinstance(latest, Sample):
                values = (latest.capture_ns, tuple(latest.values))
            slot = slots.get(source.name)
            out[source.name] = (
                source.stats.snapshot(),
                source.describe(),
                source.ended(),
                getattr(source, "ended_ns", None),
                values,
                str(slot.path) if slot else None,
            )
        return ("status", out, recorder.totals, recorder.recording)

    def report() -> None:
        while not stop.wait(STATUS_EVERY_S):
            send(status())

    reporter = threading.Thread(target=report, name="knack-capture-status", daemon=True)
    reporter.start()
    at_ns = None
    try:
        while True:
            try:
                command, *args = conn.recv()
            except (EOFError, OSError):
                log.error("the session that ran this capture is gone: the open clips are sealed and capture stops")
                break
            if command == "close":
                at_ns = args[0]
                break
            getattr(recorder, command)(*args)
    finally:
        try:
            recorder.close(at_ns=at_ns)
        finally:
            stop.set()
            reporter.join()
            send(status(previews=False))
            send(("closed", recorder.totals))
        for slot in slots.values():
            slot.close()


# --- the parent's view ------------------------------------------------------------------------------
class SourceView:
    """A source as the parent sees it: its name and kind, and the child's latest word on its counters."""

    def __init__(self, name: str, kind: str, info: dict, config):
        self.name, self.kind, self.config = name, kind, config
        self.stats = StreamStats()
        self._info = info
        self._ended = False
        self.ended_ns: int | None = None

    def describe(self) -> dict:
        return self._info

    def ended(self) -> bool:
        return self._ended


class CaptureProcess:
    """The Recorder's interface, with the recorder running in a child process (see the module's doc)."""

    def __init__(
        self,
        config: Config,
        key: DeviceKey,
        on_clip: Callable[[ClipWritten], None] | None = None,
        on_problem: Callable[[str | None], None] | None = None,
    ):
        self.config, self.key = config, key
        self.on_clip, self.on_problem = on_clip, on_problem
        # Made here only for their names, kinds and configured description: nothing is opened in this process.
        self.sources = [SourceView(s.name, s.kind, s.describe(), s.config) for s in make_sources(config)]
        self.clock = Clock()
        self.totals = Totals()
        self.recording = False  # whether the child cuts clips, as it last said
        self.recovered: list[str] = []
        self.restarts = 0
        self.problem: str | None = None
        self._carried = Totals()  # what children before this one counted
        self._latest: dict[str, Sample] = {}
        self._slots: dict[str, PreviewSlot] = {}
        self._preview_dir = _preview_dir()
        self._context = multiprocessing.get_context("spawn")  # never fork a process that runs threads
        self._lock = threading.Lock()
        self._process = None
        self._conn = None
        self._reader: threading.Thread | None = None
        self._started_event = threading.Event()
        self._closed_event = threading.Event()
        self._closing = False
        self._want_recording = False
        self._at_cameras_end = False
        self._failed: str | None = None
        self._ran = False  # a child has started once: from then on a child that ends is restarted
        self.task = clean_task(config.recorder.task)  # the latest task asked for; a restarted child starts with it

    # --- lifetime ------------------------------------------------------------------------------
    def start(self, record: bool = True) -> CaptureProcess:
        """Starts the child and waits until its sources started; raises CaptureFailed when they cannot."""
        self._want_recording = record
        self._spawn(record)
        if not self._started_event.wait(START_TIMEOUT_S) or self._failed:
            self._stop_child()
            raise CaptureFailed(self._failed or f"the capture process did not start within {START_TIMEOUT_S:g} s")
        return self

    def _spawn(self, record: bool) -> None:
        parent, child = self._context.Pipe()
        self._started_event.clear()
        self._closed_event.clear()
        self._failed = None
        config = dataclasses.replace(self.config, recorder=dataclasses.replace(self.config.recorder, task=self.task))
        process = self._context.Process(target=_child, args=(child, config, self.key, record, str(self._preview_dir)), name="knack-capture", daemon=True)
        process.start()
        child.close()
        self._process, self._conn = process, parent
        self._spawned_at = time.monotonic()
        self._reader = threading.Thread(target=self._read, args=(parent, process), name="knack-capture-reader", daemon=True)
        self._reader.start()
        if self._at_cameras_end:
            self._send("stop_at_cameras_end")

    def close(self, at_ns: int | None = None) -> Totals:
        """Ends the current clip (now, or at `at_ns`), seals every open clip and stops the child; idempotent."""
        if self._closing:
            return self.totals
        self._closing = True
        if self._process is not None and self._process.is_alive():
            self._send("close", at_ns or self.clock.now_ns())
            if not self._closed_event.wait(CLOSE_TIMEOUT_S):
                log.error("the capture process did not stop within %g s: it is killed", CLOSE_TIMEOUT_S)
        self._stop_child()
        for slot in self._slots.values():
            slot.close()
        self._slots.clear()
        shutil.rmtree(self._preview_dir, ignore_errors=True)
        return self.totals

    def _stop_child(self) -> None:
        process = self._process
        if process is None:
            return
        process.join(timeout=5.0)
        if process.is_alive():
            process.kill()
            process.join()
        if self._reader is not None:
            self._reader.join(timeout=5.0)
        self._conn.close()

    # --- commands (any thread), stamped here: the clock is the host's monotonic clock in both processes ---
    def _send(self, command: str, *args) -> None:
        try:
            with self._lock:
                self._conn.send((command, *args))
        except (OSError, AttributeError) as exc:  # between a crash and the restart: the command is lost, said once
            log.warning("capture is restarting: %s was not delivered (%s)", command, exc)

    def start_clip(self) -> None:
        self._want_recording = True
        self._send("start_clip", self.clock.now_ns())

    def stop_clip(self) -> None:
        self._want_recording = False
        self._send("stop_clip", self.clock.now_ns())

    def split(self) -> None:
        self._send("split", self.clock.now_ns())

    def mark(self, label: str = "mark") -> None:
        self._send("mark", label, self.clock.now_ns())

    def set_task(self, text: str) -> None:
        """As Recorder.set_task; text that cannot be a task raises ValueError here, before anything is sent."""
        self.task = clean_task(text)
        self._send("set_task", self.task, self.clock.now_ns())

    def stop_at_cameras_end(self) -> None:
        self._at_cameras_end = True
        self._send("stop_at_cameras_end")

    # --- what the app and the robot read ---------------------------------------------------------
    def latest(self, name: str) -> Frame | Sample | None:
        source = next((s for s in self.sources if s.name == name), None)
        if source is None:
            return None
        if source.kind != "camera":
            return self._latest.get(name)
        slot = self._slots.get(name)
        found = slot.read() if slot is not None else None
        return Frame(name, found[1], found[0]) if found else None

    def files_end_ns(self) -> int | None:
        return files_end_ns(self.sources)

    def sources_ended(self) -> bool:
        return cameras_ended(self.sources)

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    # --- the pipe ------------------------------------------------------------------------------
    def _read(self, conn, process) -> None:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break
            try:
                self._handle(message)
            except Exception:
                log.exception("capture message %r could not be handled", message[0])
        process.join(timeout=5.0)
        if self._closing:
            return
        if not self._ran:
            # The first start: start() says why, in one line, and nothing is restarted behind its back.
            self._failed = self._failed or f"the capture process ended before its sources started ({_exit_reason(process.exitcode)})"
            self._started_event.set()
            return
        if self._failed:
            why = f"it could not start again: {self._failed}"
        else:
            why = _exit_reason(process.exitcode)
            self._carried = self.totals  # what the dead child counted; the next one counts from zero
        delay = RESTART_DELAYS_S[min(self.restarts, len(RESTART_DELAYS_S) - 1)] if time.monotonic() - self._spawned_at < STABLE_S else RESTART_DELAYS_S[0]
        self.restarts += 1
        self._problem(f"capture stopped unexpectedly ({why}); restarted in {delay:g} s, the clip it had open is lost")
        time.sleep(delay)
        if not self._closing:
            self._spawn(self._want_recording)

    def _handle(self, message: tuple) -> None:
        kind = message[0]
        if kind == "status":
            _, status, totals, recording = message
            for source in self.sources:
                if source.name not in status:
                    continue
                stats, info, ended, ended_ns, values, preview = status[source.name]
                source.stats, source._info, source._ended, source.ended_ns = stats, info, ended, ended_ns
                if values is not None:
                    self._latest[source.name] = Sample(source.name, values[0], None, values[1])
                if preview and (source.name not in self._slots or str(self._slots[source.name].path) != preview):
                    try:
                        self._slots[source.name] = PreviewSlot(Path(preview), 0, create=False)
                    except OSError:
                        pass  # the child replaced it meanwhile: the next status names the new one
            carried = self._carried
            self.totals = Totals(*(getattr(carried, f) + getattr(totals, f) for f in vars(totals)))
            self.recording = recording
        elif kind == "clip":
            if self.on_clip is not None:
                self.on_clip(message[1])
        elif kind == "log":
            _, name, level, text = message
            logging.getLogger(name).log(level, "%s", text)
        elif kind == "started":
            self._ran = True
            self.recovered = list(message[1])
            self._started_event.set()
            if self.problem is not None and self.restarts:
                self._problem(None)
        elif kind == "failed":
            self._failed = message[1]
            self._started_event.set()
        elif kind == "closed":
            self._closed_event.set()

    def _problem(self, text: str | None) -> None:
        self.problem = text
        if text:
            log.error("%s", text)
        if self.on_problem is not None:
            self.on_problem(text)


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "it stopped answering"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"

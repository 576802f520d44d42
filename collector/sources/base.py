"""What every source shares: the items it emits, its counters, and a capture thread with a bounded queue."""

from __future__ import annotations

import logging
import queue
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from collector.clock import Clock

log = logging.getLogger("knack.capture")


@dataclass(frozen=True)
class Frame:
    stream: str
    capture_ns: int
    image: np.ndarray


@dataclass(frozen=True)
class Sample:
    stream: str
    capture_ns: int
    device_ns: int | None
    values: tuple[float, ...]


@dataclass(frozen=True)
class Gap:
    """A stretch with no data from a stream (unplugged camera, vanished port); end_ns is None while it lasts."""

    stream: str
    start_ns: int
    end_ns: int | None
    reason: str


@dataclass
class StreamStats:
    """Cumulative counters of one stream since it started; the recorder diffs them per clip."""

    received: int = 0
    dropped: int = 0  # bounded queue full: the consumer was too slow
    late: int = 0  # frames the camera should have delivered but did not (interval gaps)
    lost: int = 0  # samples missing by the device's sequence counter
    errors: Counter = field(default_factory=Counter)  # skipped input by reason
    state: str = "starting"
    last_error: str = ""
    rate: float = 0.0  # measured items per second over the last full second
    _window_start_ns: int = 0
    _window_count: int = 0

    def snapshot(self) -> StreamStats:
        return StreamStats(self.received, self.dropped, self.late, self.lost, Counter(self.errors), self.state, self.last_error, self.rate)

    def count(self, capture_ns: int) -> None:
        self.received += 1
        self._window_count += 1
        elapsed = capture_ns - self._window_start_ns
        if self._window_start_ns == 0:
            self._window_start_ns, self._window_count = capture_ns, 0
        elif elapsed >= 1_000_000_000:
            self.rate = self._window_count * 1e9 / elapsed
            self._window_start_ns, self._window_count = capture_ns, 0


class Source(Protocol):
    name: str
    kind: str  # "camera" | "serial" | "joints"
    items: queue.Queue
    stats: StreamStats

    def start(self, clock: Clock) -> None: ...
    def stop(self) -> None: ...
    def ended(self) -> bool: ...
    def take_gaps(self) -> list[Gap]: ...
    def describe(self) -> dict[str, Any]: ...


class SequenceCounter:
    """Samples missing by a device's sequence counter. A counter that restarts (device reset) or jumps absurdly
    far is a new start, not a loss."""

    def __init__(self) -> None:
        self.last: int | None = None

    def missing(self, seq: int) -> int:
        gap = 0 if self.last is None else seq - self.last - 1
        self.last = seq
        return gap if 0 < gap < 1_000_000 else 0


class ErrorReporter:
    """Says what a stream skipped at most once per interval, so garbage at 1 kHz is one line a second, not a flood."""

    def __init__(self, stream: str, interval_ns: int = 1_000_000_000):
        self.stream = stream
        self.interval_ns = interval_ns
        self._pending: Counter = Counter()
        self._last_ns = -interval_ns

    def add(self, errors: Counter, now_ns: int) -> None:
        self._pending.update(errors)
        self.flush(now_ns)

    def flush(self, now_ns: int, force: bool = False) -> None:
        if not self._pending or (not force and now_ns - self._last_ns < self.interval_ns):
            return
        total = sum(self._pending.values())
        # The line cut in half by opening the port mid-stream is expected: counted, but not worth a warning.
        expected = self._pending in (Counter({"partial line": 1}), Counter({"partial frame": 1}))
        level = logging.DEBUG if expected else logging.WARNING
        detail = ", ".join(f"{reason} {count}" for reason, count in self._pending.most_common())
        log.log(level, "%s: skipped %d bad record%s (%s)", self.stream, total, "" if total == 1 else "s", detail)
        self._pending.clear()
        self._last_ns = now_ns


class ThreadedSource:
    """A capture thread feeding a bounded queue: a slow consumer shows up as counted drops, never as memory."""

    kind = "source"

    def __init__(self, name: str, queue_size: int):
        self.name = name
        self.items: queue.Queue = queue.Queue(maxsize=queue_size)
        self.stats = StreamStats()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._gaps: list[Gap] = []
        self._gap_lock = threading.Lock()
        self._open_gap: Gap | None = None
        self._ended = threading.Event()
        self.clock = Clock()

    def start(self, clock: Clock) -> None:
        self.clock = clock
        self._thread = threading.Thread(target=self._guarded_run, name=f"knack-{self.kind}-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._close_gap(self.clock.now_ns())

    def ended(self) -> bool:
        return self._ended.is_set()

    def _guarded_run(self) -> None:
        try:
            self._run()
        except Exception as exc:  # a bug in one source must not take the others down
            log.exception("%s: capture stopped by an unexpected error: %s", self.name, exc)
            self.stats.state = f"failed: {exc}"
            self.stats.last_error = str(exc)
        finally:
            self._ended.set()

    def _run(self) -> None:
        raise NotImplementedError

    def _emit(self, item) -> None:
        try:
            self.items.put_nowait(item)
            self.stats.count(item.capture_ns)
        except queue.Full:
            self.stats.dropped += 1

    def _open_gap_at(self, start_ns: int, reason: str) -> None:
        with self._gap_lock:
            if self._open_gap is None:
                self._open_gap = Gap(self.name, start_ns, None, reason)
                self._gaps.append(self._open_gap)

    def _close_gap(self, end_ns: int) -> None:
        with self._gap_lock:
            if self._open_gap is not None:
                closed = Gap(self.name, self._open_gap.start_ns, end_ns, self._open_gap.reason)
                self._gaps[self._gaps.index(self._open_gap)] = closed
                self._open_gap = None

    def take_gaps(self) -> list[Gap]:
        """Closed gaps are handed over once; an open gap is reported each time until it closes."""
        with self._gap_lock:
            closed = [g for g in self._gaps if g.end_ns is not None]
            self._gaps = [g for g in self._gaps if g.end_ns is None]
            return closed + list(self._gaps)

    def _open_with_backoff(self, open_once, first_delay: float, max_delay: float, says_why) -> bool:
        """Calls open_once() until it returns None (open) or the source stops; says why once, not at every retry."""
        delays = backoff_delays(first_delay, max_delay)
        reported = False
        while not self._stop.is_set():
            why = open_once()
            if why is None:
                return True
            if not reported:
                log.warning(says_why(why))
                self.stats.last_error = why
                reported = True
            self.stats.state = f"waiting: {why}"
            self._open_gap_at(self.clock.now_ns(), why)
            if not self._sleep(next(delays)):
                return False
        return False

    def _resume(self, what: str) -> None:
        """Back after a gap: closes it and says for how long the stream was away."""
        now = self.clock.now_ns()
        if self._open_gap is not None:
            log.warning("%s is back after %.1f s", what, (now - self._open_gap.start_ns) / 1e9)
            self._close_gap(now)
        self.stats.state = "recording"

    def _sleep(self, seconds: float) -> bool:
        """Wait, waking early on stop; True if the source should keep going."""
        return not self._stop.wait(seconds)


def backoff_delays(first: float = 0.5, cap: float = 5.0):
    delay = first
    while True:
        yield delay
        delay = min(cap, delay * 2)

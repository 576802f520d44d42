"""The recorder's one clock: monotonic nanoseconds for every capture time, anchored once to UTC wall time."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime


@dataclass(frozen=True)
class Clock:
    # Taken together at start so any capture time converts to wall time without the wall clock's jumps.
    anchor_mono_ns: int = field(default_factory=time.monotonic_ns)
    anchor_wall_ns: int = field(default_factory=time.time_ns)

    @staticmethod
    def now_ns() -> int:
        return time.monotonic_ns()

    def wall_ns(self, mono_ns: int) -> int:
        return self.anchor_wall_ns + (mono_ns - self.anchor_mono_ns)

    def utc(self, mono_ns: int) -> str:
        wall = self.wall_ns(mono_ns)
        stamp = datetime.fromtimestamp(wall // 1_000_000_000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{stamp}.{wall % 1_000_000_000:09d}Z"

"""Camera capture through OpenCV: a device index, a /dev/video* or udev symlink path, a video file, or a stream URL."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from collector.config import CameraConfig
from collector.sources.base import Frame, ThreadedSource

log = logging.getLogger("knack.capture")


def source_kind(source: str) -> str:
    """'device', 'stream' or 'file': decides whether a failed read means "ended" or "unplugged, retry"."""
    if source.isdigit():
        return "device"
    if "://" in source:
        return "stream"
    path = Path(source)
    if source.startswith("/dev/"):
        return "device"
    try:
        if stat.S_ISCHR(path.stat().st_mode):
            return "device"
    except OSError:
        pass
    return "file"


class LateCounter:
    """Frames a camera should have delivered at its nominal rate and did not.

    A camera that skips frames shows it only in the gaps between the ones it delivers. But a gap followed by
    frames in quick succession is a busy reader catching up on frames the driver (or, for a paced file, the
    schedule) kept: jitter, not loss. So the deficit against the nominal rate is judged only at a frame that
    no burst follows, and only what exceeds `slack` frames is counted, once."""

    def __init__(self, period_ns: int, slack: int = 2):
        self.period_ns, self.slack = period_ns, slack
        self.anchor_ns: int | None = None
        self.delivered = 0
        self.last_ns = 0
        self.deficit = 0  # at the previous frame, not yet judged

    def frame(self, capture_ns: int) -> int:
        """Takes one delivered frame; returns how many frames are newly known to be lost."""
        if self.anchor_ns is None:
            self.anchor_ns, self.delivered, self.last_ns = capture_ns, 1, capture_ns
            return 0
        lost = 0
        if capture_ns - self.last_ns >= self.period_ns // 2 and self.deficit > self.slack:
            lost = self.deficit - self.slack  # no burst came to make it up: those frames are gone
            self.delivered += lost  # counted now, never again
        self.delivered += 1
        self.last_ns = capture_ns
        self.deficit = int((capture_ns - self.anchor_ns) / self.period_ns + 0.5) + 1 - self.delivered
        if self.deficit < 0:  # ahead of the nominal rate: count afresh from here
            self.anchor_ns, self.delivered, self.deficit = capture_ns, 1, 0
        return lost


class FrameGrabber(Protocol):
    """The camera seam: open, read one frame, close."""

    def open(self) -> str | None: ...  # None when open, else why not
    def read(self) -> np.ndarray | None: ...
    def close(self) -> None: ...
    def properties(self) -> dict[str, Any]: ...


class OpenCVGrabber:
    def __init__(self, config: CameraConfig):
        self.config = config
        self.kind = source_kind(config.source)
        self._cap: cv2.VideoCapture | None = None

    def open(self) -> str | None:
        src = self.config.source
        if self.kind == "file" and not os.path.exists(src):
            return f"{src} does not exist"
        if self.kind == "device" and not src.isdigit() and not os.path.exists(src):
            return f"{src} is not there (unplugged?)"
        target: int | str = int(src) if src.isdigit() else os.path.realpath(src) if self.kind == "device" else src
        cap = cv2.VideoCapture(target, cv2.CAP_V4L2 if self.kind == "device" else cv2.CAP_ANY)
        if not cap.isOpened():
            cap.release()
            return f"OpenCV cannot open {src}"
        if self.kind != "file":
            # Cameras take FOURCC before size and rate; MJPG is what makes 30 fps possible over USB 2.
            if self.config.fourcc:
                cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*self.config.fourcc))
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.config.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.config.height)
            cap.set(cv2.CAP_PROP_FPS, self.config.fps)
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        self._cap = cap
        return None

    def read(self) -> np.ndarray | None:
        if self._cap is None:
            return None
        ok, image = self._cap.read()
        return image if ok else None

    def rewind(self) -> bool:
        return self._cap is not None and self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def properties(self) -> dict[str, Any]:
        if self._cap is None:
            return {}
        code = int(self._cap.get(cv2.CAP_PROP_FOURCC))
        fourcc = "".join(chr((code >> (8 * i)) & 0xFF) for i in range(4)) if code > 0 else ""
        return {
            "width": int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            "height": int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            "fps": float(self._cap.get(cv2.CAP_PROP_FPS)),
            "fourcc": fourcc.strip("\x00"),
        }


class CameraSource(ThreadedSource):
    kind = "camera"

    def __init__(self, config: CameraConfig, grabber: FrameGrabber | None = None):
        super().__init__(config.name, config.queue_size)
        self.config = config
        self.grabber = grabber or OpenCVGrabber(config)
        self.source_kind = source_kind(config.source)
        self.actual: dict[str, Any] = {}
        self.ended_ns: int | None = None  # for a file: when its last frame's display time is over

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "source": self.config.source,
            "source_kind": self.source_kind,
            "nominal_rate": self.config.fps,
            "width": self.actual.get("width", self.config.width),
            "height": self.actual.get("height", self.config.height),
            "fourcc": self.actual.get("fourcc") or self.config.fourcc,
        }

    def _open(self) -> str | None:
        why = self.grabber.open()
        if why is None:
            self.actual = self.grabber.properties()
        return why

    def _run(self) -> None:
        period_ns = int(1e9 / self.config.fps)
        paced = self.source_kind == "file" and self.config.realtime
        says = lambda why: f"camera {self.name}: {why}; retrying with backoff, other streams keep recording"  # noqa: E731
        while self._open_with_backoff(self._open, 0.5, 5.0, says):
            self._resume(f"camera {self.name}")
            frames, last_ns, next_due = 0, None, self.clock.now_ns()
            late = LateCounter(period_ns)
            while not self._stop.is_set():
                if paced:
                    # A file plays at its nominal rate so its frames line up with live serial streams.
                    wait = next_due - self.clock.now_ns()
                    if wait > 0 and not self._sleep(wait / 1e9):
                        break
                    next_due += period_ns
                image = self.grabber.read()
                capture_ns = self.clock.now_ns()
                if image is None:
                    if self.source_kind == "file" and self.config.loop and frames and self.grabber.rewind():
                        next_due -= period_ns  # the end of the file is not a frame: keep its time slot
                        continue
                    break
                frames += 1
                self.stats.late += late.frame(capture_ns)
                last_ns = capture_ns
                self._emit(Frame(self.name, capture_ns, image))
            self.grabber.close()
            if self._stop.is_set():
                break
            if self.source_kind == "file":
                self.ended_ns = (last_ns or self.clock.now_ns()) + period_ns
                log.info("camera %s: video file %s ended after %d frames", self.name, self.config.source, frames)
                self.stats.state = "ended"
                return
            why = "stopped delivering frames (unplugged?)"
            log.warning("camera %s: %s %s; re-opening with backoff", self.name, self.config.source, why)
            self.stats.last_error = why
            self._open_gap_at(last_ns or self.clock.now_ns(), why)
        self.stats.state = "stopped"

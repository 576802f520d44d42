"""Capture first: the work that may lag (labeling, pinning, the chain and its validator) yields the CPU to it.

On Linux a thread's nice value is its own, and the threads it starts (onnxruntime's pool, made when the labeler
loads; FFmpeg's decoders; a validator's labeler) inherit it; so when the CPU is short the scheduler serves the
capture process (and the app's or the service's main thread) first. Capture runs in a process of its own
(collector/capture_process.py), so the interpreter lock is no longer shared with this work either.
"""

from __future__ import annotations

import os
import threading

BACKGROUND_NICE = 10


def yield_to_capture() -> None:
    """Lowers the calling thread's priority (and that of the threads it starts from now on)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICE)
    except (AttributeError, OSError):  # not Linux, or not allowed: this work runs at the same priority
        pass

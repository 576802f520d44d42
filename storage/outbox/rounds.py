"""The one thread skeleton of the outbox's workers (pinning, the chain round): a round every `interval`
seconds and at once when woken; on close, one last round for what arrived just before (unless told not to)."""

from __future__ import annotations

import logging
import threading

from collector.priority import yield_to_capture

log = logging.getLogger("knack.storage")


class Rounds:
    name = "knack-rounds"

    def __init__(self, interval: float):
        self.interval = interval
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._drain = True
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)

    def round(self) -> None:
        raise NotImplementedError

    def round_failed(self, exc: Exception) -> None:
        """The thread must outlive one bad round; the outbox keeps every clip for the next."""
        log.exception("%s: round failed", self.name, exc_info=exc)

    def start(self):
        self._thread.start()
        return self

    def wake(self) -> None:
        self._wake.set()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def close(self, drain: bool = True, timeout: float | None = None) -> None:
        """Stops after one last round when `drain`; returns after `timeout` seconds at most (the round may
        still be going then: see `running`)."""
        self._drain = drain
        self._stop.set()
        self._wake.set()
        if self._thread.ident is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        yield_to_capture()  # hashing, pinning and the embedded chain (with its validator) may lag; capture may not
        while True:
            stopping = self._stop.is_set()
            if stopping and not self._drain:
                return
            try:
                self.round()
            except Exception as exc:
                self.round_failed(exc)
            if stopping:
                return
            self._wake.wait(self.interval)
            self._wake.clear()

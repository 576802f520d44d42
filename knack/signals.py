"""How a service stops: SIGTERM or SIGINT asks for a graceful stop; the same again while stopping ends the
process at once, after one JSON log line that says so.

The handlers only set a flag (or, for the second stop, end the process): everything else happens on the
service's main loop, outside the handler."""

from __future__ import annotations

import json
import os
import signal
import threading
import time


class StopSignals:
    def __init__(self, logger: str, killed_event: str, killed_note: str):
        self.stop = threading.Event()
        self.signal_name = ""
        self._logger, self._killed_event, self._killed_note = logger, killed_event, killed_note

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_stop)

    def _on_stop(self, signum, frame) -> None:
        if self.stop.is_set():
            name = signal.Signals(signum).name
            line = {
                "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "level": "warning",
                "logger": self._logger,
                "event": self._killed_event,
                "msg": f"second {name}: exiting at once; {self._killed_note}",
            }
            os.write(1, (json.dumps(line, separators=(",", ":")) + "\n").encode())
            os._exit(128 + signum)
        self.signal_name = signal.Signals(signum).name
        self.stop.set()

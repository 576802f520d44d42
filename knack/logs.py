"""Logs of the services (`knack robot`, `knack validate --watch`) as JSON lines on stdout: one event per line,
which journald stores as is and `jq` reads back.

Every record carries a UTC time, its level, the logger and the message; an `event` name and any fields
passed as `extra={"fields": {...}}` go in as keys of their own, for a log pipeline to filter on. Nothing
secret is ever passed to a logger (keys stay in keystores, passwords in the environment)."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from datetime import UTC, datetime


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": getattr(record, "event", None) or "log",
            "msg": record.getMessage(),
        }
        entry.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)  # newlines escaped by JSON: still one line
        return json.dumps(entry, default=str, separators=(",", ":"))


class LastProblem(logging.Handler):
    """Remembers the last warning or error, for /healthz and the last-error-time metric."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self._lock_ = threading.Lock()
        self.at: float = 0.0  # unix time
        self.message = ""
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        with self._lock_:
            self.at, self.message = record.created, record.getMessage()
            self.count += 1

    def since(self, seconds: float, now: float | None = None) -> str | None:
        """The last problem if it happened within `seconds`, else None."""
        with self._lock_:
            return self.message if self.at and (now or time.time()) - self.at <= seconds else None


def install(level: int = logging.INFO, stream=None) -> LastProblem:
    """Replaces the root logger's handlers with one JSON-lines handler on stdout."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonLines())
    problems = LastProblem()
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.addHandler(problems)
    root.setLevel(level)
    return problems


def event(logger: logging.Logger, name: str, msg: str, *args, level: int = logging.INFO, **fields) -> None:
    """One named event with its fields: event(log, "clip.written", "clip %s written", clip_id, frames=300)."""
    logger.log(level, msg, *args, extra={"event": name, "fields": fields})

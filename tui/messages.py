"""The app's messages: one per kind of the device session's typed events (knack.events), posted to the app
from the stage threads and passed on to the screen in view; the requests a screen makes of the app; and
log lines from any thread."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textual.message import Message

from knack import events as ev


# --- what the session reports (each mirrors the event of the same name) ---------------------------------
# The app handles these first and then hands the same message to the screen in view: `bubble=False` keeps a
# screen from sending it back up to the app.
@dataclass
class ClipWritten(Message, bubble=False):
    clip: Any  # clip_id, path, frames, samples


@dataclass
class ClipLabeled(Message, bubble=False):
    result: Any  # clip_id, path, accepted, score, summary


@dataclass
class LabelFailed(Message, bubble=False):
    clip_id: str
    reason: str


@dataclass
class ClipPinned(Message, bubble=False):
    result: Any  # clip_id, cid, error (empty when pinned)


@dataclass
class BatchSubmitted(Message, bubble=False):
    submitted: Any  # batch_id, clip_ids, tx_hash, error


@dataclass
class BatchSettled(Message, bubble=False):
    batch_id: int
    verdicts: tuple


@dataclass
class ClipsSettled(Message, bubble=False):
    count: int


@dataclass
class TaskChanged(Message, bubble=False):
    task: str


@dataclass
class Problem(Message, bubble=False):
    part: str
    text: str


@dataclass
class ProblemCleared(Message, bubble=False):
    part: str


FOR_EVENT: dict[type, type[Message]] = {
    ev.ClipWritten: ClipWritten,
    ev.ClipLabeled: ClipLabeled,
    ev.LabelFailed: LabelFailed,
    ev.ClipPinned: ClipPinned,
    ev.BatchSubmitted: BatchSubmitted,
    ev.BatchSettled: BatchSettled,
    ev.ClipsSettled: ClipsSettled,
    ev.TaskChanged: TaskChanged,
    ev.Problem: Problem,
    ev.ProblemCleared: ProblemCleared,
}


def message_for(event: ev.Event) -> Message | None:
    """The message for a session event; None for a kind this app does not know (a newer session)."""
    kind = FOR_EVENT.get(type(event))
    if kind is None:
        return None
    return kind(**{field.name: getattr(event, field.name) for field in dataclasses.fields(event)})


# --- what the app itself tells a screen -------------------------------------------------------------------
@dataclass
class ClipDiscarded(Message, bubble=False):
    clip_id: str


# --- what a screen asks of the app (these bubble from the screen up to the app) ---------------------------
@dataclass
class RetryRequested(Message):
    clip_ids: list[str] | None  # None: every clip waiting or failed


@dataclass
class RelabelRequested(Message):
    path: Path


@dataclass
class DiscardRequested(Message):
    clip_id: str


@dataclass
class TaskRequested(Message):
    text: str  # as typed: the session refuses text that cannot be a task


@dataclass
class LogLine(Message):
    line: str
    level: int

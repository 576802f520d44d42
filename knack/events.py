"""What a device session reports while it runs, as typed events: the console, the app's messages and the
robot's JSON log lines are each one reading of these. Events are posted from the stage that made them
(capture, labeler, pinner, chain thread): a listener must be quick and must not block."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ClipWritten:
    clip: Any  # collector.recorder.ClipWritten: clip_id, path, frames, samples


@dataclass(frozen=True)
class ClipLabeled:
    result: Any  # collector.labeling.Labeled: clip_id, path, accepted, score, summary


@dataclass(frozen=True)
class LabelFailed:
    clip_id: str
    reason: str


@dataclass(frozen=True)
class ClipPinned:
    result: Any  # storage.outbox.pinner.PinResult: clip_id, cid, error (empty when pinned)


@dataclass(frozen=True)
class BatchSubmitted:
    submitted: Any  # storage.outbox.submitter.Submitted: batch_id, clip_ids, tx_hash, error


@dataclass(frozen=True)
class BatchSettled:
    batch_id: int
    verdicts: tuple  # storage.validator.Verdict, in submission order (this process is the validator)


@dataclass(frozen=True)
class ClipsSettled:
    count: int  # clips whose settlement this device read back from the ledger


@dataclass(frozen=True)
class TaskChanged:
    """The operator named another task: a clip being recorded was split there; "" names none."""

    task: str


@dataclass(frozen=True)
class Problem:
    """A part stopped working (the chain, the content store): said once per change, not once per round."""

    part: str
    text: str


@dataclass(frozen=True)
class ProblemCleared:
    part: str


Event = ClipWritten | ClipLabeled | LabelFailed | ClipPinned | BatchSubmitted | BatchSettled | ClipsSettled | TaskChanged | Problem | ProblemCleared
Listener = Callable[[Event], None]


def ignore(_event: Event) -> None:
    return None

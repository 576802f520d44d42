"""One capture session wired end to end on the device: recorder -> label worker -> outbox -> pinner.

`knack record`, `knack tui` and (later) `knack robot` all run this same wiring; they differ only in what they
show. Each stage runs in its own thread, so capture never waits on labeling, pinning or a screen."""
from __future__ import annotations

import os
import time
from collections import Counter, deque
from pathlib import Path
from typing import Callable

from collector.config import Config, ConfigError


def open_outbox(config):
    """The outbox and the content store of this data directory, with every labeled clip on disk known."""
    from collector.bundle import list_clips
    from storage.content.ipfs import open_store
    from storage.outbox import Outbox
    from storage.outbox.pinner import enqueue_all

    outbox = Outbox(config.data_path / "outbox.sqlite")
    enqueue_all(outbox, list_clips(config.clips_path))
    return outbox, open_store(config.storage.ipfs_api, config.data_path)


def remote_pinning(config):
    """The configured pinning service, with its token from the environment; None when none is set."""
    from storage.content.remote_pin import TOKEN_ENV, PinningService, RemotePinError

    if not config.storage.pinning_service:
        return None
    try:
        return PinningService(config.storage.pinning_service, os.environ.get(TOKEN_ENV, ""))
    except RemotePinError as exc:
        raise ConfigError(str(exc)) from None


def _nothing(_item) -> None:
    return None


class CaptureSession:
    """Callbacks run on the thread of the stage that calls them (capture, labeler, pinner): keep them short."""

    def __init__(
        self,
        config: Config,
        key,
        label: bool | None = None,
        on_clip: Callable | None = None,
        on_labeled: Callable | None = None,
        on_pinned: Callable | None = None,
        history: int | None = None,
    ):
        from collector.pipeline import LabelWorker
        from collector.recorder import Recorder
        from collector.sources import make_sources
        from storage.outbox.pinner import Pinner

        self.config, self.key = config, key
        self._on_clip, self._on_labeled, self._on_pinned = on_clip or _nothing, on_labeled or _nothing, on_pinned or _nothing
        # The latest ClipWritten and PinResult (all of them unless `history` caps it, as a service does);
        # `counts` keeps the totals: clips written, pinned, pin_failed.
        self.written: deque = deque(maxlen=history)
        self.pinned: deque = deque(maxlen=history)
        self.counts: Counter = Counter()
        self.backlog: list[Path] = []  # earlier clips with no decision, queued for labeling at start
        self.outbox, self.store = open_outbox(config)
        self.pinner = Pinner(self.outbox, self.store, on_pinned=self._pinned, remote=remote_pinning(config))
        label = config.labeler.label_on_record if label is None else label
        self.labels = LabelWorker(config, key, on_labeled=self._labeled, history=history) if label else None
        self.recorder = Recorder(config, make_sources(config), key, on_clip=self._clip)
        self._started = self._closed = False

    @property
    def labeled(self) -> list:
        return self.labels.labeled if self.labels is not None else []

    @property
    def label_failures(self):
        return self.labels.failed if self.labels is not None else []

    def start(self, record: bool = True) -> "CaptureSession":
        """Sources start at once; with record=False no clip is cut until `recorder.start_clip()`."""
        from storage.outbox.discard import sweep_discarded
        from collector.pipeline import unlabeled

        sweep_discarded(self.outbox, self.config.clips_path)  # discards a crash cut short
        self._started = True
        self.pinner.start()
        if self.labels is not None:
            self.labels.start()
        self.recorder.start(record=record)  # its `recovered` lines say what a crash left and what was salvaged
        if self.labels is not None:
            # After start: clips salvaged from a crash are sealed by now; the first new clip is seconds away.
            sealed = {c.clip_id for c in self.written}
            self.backlog = [c for c in unlabeled(self.config.clips_path) if c.name not in sealed]
            for clip in self.backlog:
                self.labels.submit(clip)
        return self

    def relabel(self, clip: Path) -> bool:
        """`knack label CLIP_DIR`, in the background; the new decision goes back through the outbox."""
        if self.labels is None:
            return False
        self.labels.submit(Path(clip))
        return True

    def retry(self, clip_ids: list[str] | None = None) -> int:
        """`knack retry [CLIP_ID…]`; the pinner is woken at once."""
        count = self.outbox.retry(clip_ids)
        self.pinner.wake()
        return count

    def discard(self, clip_id: str) -> None:
        """`knack discard CLIP_ID`: raises DiscardError for a clip that is shared already."""
        from storage.outbox.discard import discard

        discard(self.outbox, self.config.clips_path, clip_id)

    def close(self, at_ns: int | None = None, timeout: float | None = None) -> bool:
        """Seals the open clip, labels what is queued, and pins what is due; idempotent.

        With a timeout (a service's stop grace period) it returns False when labeling or pinning was still
        going when time ran out: those clips are on disk and in the outbox, and the next start picks them up."""
        if self._closed or not self._started:
            self._closed = True
            return True
        self._closed = True
        deadline = None if timeout is None else time.monotonic() + timeout
        left = lambda: None if deadline is None else max(0.0, deadline - time.monotonic())  # noqa: E731
        self.recorder.close(at_ns=at_ns)
        finished = True
        if self.labels is not None:
            self.labels.close(timeout=left())
            finished = not self.labels.running
        self.pinner.close(drain=finished and left() != 0.0, timeout=left())
        return finished and not self.pinner.running

    # --- the stages' threads -----------------------------------------------------------------------------
    def _clip(self, clip) -> None:
        self.written.append(clip)
        self.counts["written"] += 1
        self.outbox.record(clip.clip_id, clip.path, "recorded")
        if self.labels is not None:
            self.labels.submit(clip.path)
        self._on_clip(clip)

    def _labeled(self, result) -> None:
        from storage.outbox.pinner import enqueue

        # The decision is in the signed manifest; the outbox takes it from there and the pinner is woken.
        enqueue(self.outbox, result.path)
        self.pinner.wake()
        self._on_labeled(result)

    def _pinned(self, result) -> None:
        self.pinned.append(result)
        self.counts["pin_failed" if result.error else "pinned"] += 1
        self._on_pinned(result)

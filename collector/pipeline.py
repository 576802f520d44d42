"""What happens to a clip after the recorder seals it: labeled in a background thread, so capture never waits
on the models. Later stages (the outbox) hang off the same queue."""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path

from collector.config import Config
from collector.identity import DeviceKey
from collector.priority import yield_to_capture

log = logging.getLogger("knack.pipeline")


def unlabeled(clips_dir: Path) -> list[Path]:
    """Clips with no decision yet: recorded while labeling was off, or cut short by a crash or power loss."""
    from collector.bundle import MANIFEST, list_clips

    waiting = []
    for clip in list_clips(clips_dir):
        try:
            if json.loads((clip / MANIFEST).read_text(encoding="utf-8")).get("decision") is None:
                waiting.append(clip)
        except (OSError, ValueError):
            continue  # `knack verify` names what is wrong with it
    return waiting


class LabelWorker:
    """Labels clips in the order they arrive; a clip that fails is reported and kept, the rest go on."""

    def __init__(
        self, config: Config, key: DeviceKey, on_labeled: Callable | None = None, labeler=None, history: int | None = None, on_failed: Callable | None = None
    ):
        self.config, self.key, self.on_labeled, self.on_failed = config, key, on_labeled, on_failed
        self._labeler = labeler
        self._queue: queue.Queue[Path | None] = queue.Queue()
        # The latest results (all of them unless `history` caps it: a service runs for weeks); counts never cap.
        self.labeled: deque = deque(maxlen=history)
        self.failed: deque[tuple[Path, str]] = deque(maxlen=history)
        self.counts: Counter = Counter()  # accepted, rejected, failed
        self._thread = threading.Thread(target=self._run, name="knack-labeler", daemon=True)

    def start(self) -> LabelWorker:
        self._thread.start()
        return self

    def submit(self, clip: Path) -> None:
        self._queue.put(Path(clip))

    def close(self, timeout: float | None = None) -> None:
        """Labels what is queued, then stops."""
        self._queue.put(None)
        self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def _run(self) -> None:
        from collector.labeling import Labeler, LabelError
        from collector.labeling.cards import CardError

        yield_to_capture()
        try:
            labeler = self._labeler or Labeler(self.config, self.key)
        except (CardError, OSError) as exc:
            log.error("labeler cannot start, clips stay unlabeled (run `knack label` later): %s", exc)
            labeler = None
        while (clip := self._queue.get()) is not None:
            if labeler is None:
                self._failed(clip, "labeler not available")
                continue
            try:
                result = labeler.label(clip)
            except (LabelError, OSError) as exc:
                log.error("clip %s not labeled: %s", clip.name, exc)
                self._failed(clip, str(exc))
                continue
            except Exception as exc:  # a model runtime failure must not stop the clips behind it
                log.exception("clip %s not labeled: the labeler failed", clip.name)
                self._failed(clip, f"labeler failed: {exc}")
                continue
            self.labeled.append(result)
            self.counts["accepted" if result.accepted else "rejected"] += 1
            if self.on_labeled:
                self.on_labeled(result)

    def _failed(self, clip: Path, reason: str) -> None:
        self.failed.append((clip, reason))
        self.counts["failed"] += 1
        if self.on_failed:
            self.on_failed(clip, reason)

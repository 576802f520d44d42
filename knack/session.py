"""The device session: capture -> label -> pin -> submit -> settle, wired once.

`knack record`, `knack tui`, `knack robot` and `knack demo` all run this class; they differ only in how they
show its typed events (knack.events). Capture runs in a process of its own (collector/capture_process.py,
unless `recorder.own_process` is false) and every other stage in a thread of its own at a lower priority, so
capture never waits on labeling, pinning, the chain or a screen; the outbox carries every clip from one stage
to the next."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from pathlib import Path

from collector.config import Config
from knack import events as ev
from knack import wiring
from storage.outbox.rounds import Rounds

log = logging.getLogger("knack.session")


class ChainRounds(Rounds):
    """Every `interval` seconds, and at once when woken: submit what is pinned, settle (when this process is
    also the validator) and read the settlements back. A chain that is down or reverts costs one Problem
    event per change of problem, never a clip: the outbox keeps every state and the next round resumes."""

    name = "knack-chain"

    def __init__(self, session: DeviceSession, interval: float):
        super().__init__(interval)
        self.session = session
        self.rounds: Counter = Counter()  # ok, error
        self.problem: str | None = None
        self.force = False

    def due(self) -> bool:
        outbox = self.session.outbox
        counts = outbox.counts()
        return bool(counts.get("pinned") or counts.get("submitted") or outbox.staged_txs("submit"))

    def round(self) -> None:
        if not (self.due() or self.force):
            return
        self.force = False
        try:
            report = self.session.settle()
        except Exception as exc:  # unreachable, reverted, not deployed: said once, retried next round
            self.rounds["error"] += 1
            self._problem(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            return
        if report.errors:
            self.rounds["error"] += 1
            self._problem(report.errors[0])
        else:
            self.rounds["ok"] += 1
            self._problem(None)

    def settle_now(self) -> None:
        """A round at once, even when nothing seems due (the app's "Submit now")."""
        self.force = True
        self.wake()

    def _problem(self, problem: str | None) -> None:
        if problem == self.problem:
            return
        self.problem = problem
        self.session.post(ev.Problem("chain", problem) if problem else ev.ProblemCleared("chain"))


class DeviceSession:
    """Listeners run on the thread of the stage that posts (capture, labeler, pinner, chain): keep them short.

    `validator_key` makes this process also the validator (a demo, a bench with the embedded chain): the
    embedded chain then deploys itself on first use and each round settles what was submitted. Without it,
    settling is the network validator's job (`knack validate`) and rounds submit and read settlements back."""

    def __init__(
        self,
        config: Config,
        key,
        *,
        validator_key=None,
        chain_every_s: float | None = None,
        label: bool | None = None,
        history: int | None = None,
        listener: ev.Listener | None = None,
    ):
        from collector.capture_process import CaptureProcess
        from collector.pipeline import LabelWorker
        from collector.recorder import Recorder
        from collector.sources import make_sources
        from storage.outbox.pinner import Pinner

        self.config, self.validator_key = config, validator_key
        self._ledger = None
        self._validator = None  # opened once: it keeps a cache of the content the chain paid for
        self._ledger_lock = threading.RLock()  # one caller at a time on the ledger client
        if key.domain is None:
            key = key.bind(wiring.network_domain(config))  # the network this data directory last knew, if any
        if validator_key is not None and not config.storage.chain_rpc:
            # A bench or demo acting as its own network: the embedded chain deploys itself, so its network is
            # known, and a device nobody registered joins as its own contributor (`knack demo` registers it
            # to a contributor key first).
            ledger = self.ledger()
            key = key.bind(ledger.domain())
            if ledger.device(key.address) is None:
                ledger.register_device(key, device=key, contributor=key)
        if key.domain is None:
            log.warning(
                "this device does not know its network yet: its clips are signed for no chain until it does (they are re-signed for it before they are pinned)"
            )
        self.key = key
        self.listener = listener or ev.ignore
        # The latest ClipWritten and PinResult (all of them unless `history` caps it, as a service does);
        # `counts` keeps the totals: clips written, pinned, pin_failed.
        self.written: deque = deque(maxlen=history)
        self.pinned: deque = deque(maxlen=history)
        self.counts: Counter = Counter()
        self.backlog: list[Path] = []  # earlier clips with no decision, queued for labeling at start
        self.outbox = wiring.open_outbox(config)
        self.store = wiring.open_store(config)
        self.pinner = Pinner(self.outbox, self.store, on_pinned=self._pinned, remote=wiring.remote_pinning(config), prepare=self._bind_to_network)
        label = config.labeler.label_on_record if label is None else label
        self.labels = LabelWorker(config, key, on_labeled=self._labeled, on_failed=self._label_failed, history=history) if label else None
        if config.recorder.own_process:
            self.recorder = CaptureProcess(config, key, on_clip=self._clip, on_problem=self._capture_problem)
        else:
            self.recorder = Recorder(config, make_sources(config), key, on_clip=self._clip)
        self.chain = ChainRounds(self, config.robot.chain_every_s if chain_every_s is None else chain_every_s)
        self._started = self._closed = False

    @property
    def labeled(self) -> list:
        return list(self.labels.labeled) if self.labels is not None else []

    @property
    def label_failures(self) -> list:
        return list(self.labels.failed) if self.labels is not None else []

    @property
    def contributor(self) -> str:
        return self.config.identity.contributor or self.key.address

    def post(self, event: ev.Event) -> None:
        self.listener(event)

    # --- the lifetime ----------------------------------------------------------------------------
    def start(self, record: bool = True, chain: bool = True) -> DeviceSession:
        """Sources start at once; with record=False no clip is cut until `recorder.start_clip()`. With
        chain=False nothing is submitted on a schedule (`settle()` still runs a round on demand)."""
        from collector.pipeline import unlabeled
        from storage.outbox.discard import sweep_discarded

        sweep_discarded(self.outbox, self.config.clips_path)  # discards a crash cut short
        self._started = True
        self.pinner.start()
        if chain:
            self.chain.start()
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

    def close(self, at_ns: int | None = None, timeout: float | None = None) -> bool:
        """Seals the open clip, labels what is queued, pins what is due and runs a last chain round; idempotent.

        With a timeout (a service's stop grace period) it returns False when labeling or pinning was still
        going when time ran out: those clips are on disk and in the outbox, and the next start picks them up."""
        if self._closed or not self._started:
            self._closed = True
            return True
        self._closed = True
        deadline = None if timeout is None else time.monotonic() + timeout

        def left() -> float | None:
            return None if deadline is None else max(0.0, deadline - time.monotonic())

        self.recorder.close(at_ns=at_ns)
        finished = True
        if self.labels is not None:
            self.labels.close(timeout=left())
            finished = not self.labels.running
        self.pinner.close(drain=finished and left() != 0.0, timeout=left())
        finished = finished and not self.pinner.running
        self.chain.close(drain=finished and left() != 0.0, timeout=left())
        if not self.chain.running:
            with self._ledger_lock:
                if self._ledger is not None:
                    self._ledger.close()
                    self._ledger = self._validator = None
        return finished

    # --- what an operator asks for ------------------------------------------------------------------
    @property
    def task(self) -> str:
        """The task being done, as the operator last named it (recorder.task at start)."""
        return self.recorder.task

    def set_task(self, text: str) -> None:
        """Names the task being done: a clip being recorded is split here, so that each clip is signed with the
        task it shows; when idle, the next clip has it. Raises ValueError for text that cannot be a task."""
        self.recorder.set_task(text)
        self.post(ev.TaskChanged(self.recorder.task))

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

    # --- the ledger (blocking: call from a worker thread) ---------------------------------------------
    def ledger(self):
        """The configured ledger, opened once; with a validator key the embedded chain deploys itself."""
        with self._ledger_lock:
            if self._ledger is None:
                self._ledger = wiring.open_ledger(self.config)
            return wiring.ensure_deployed(self._ledger, self.validator_key, self.config)

    def settle(self):
        """One chain round (`knack submit`, with a validator key `knack validate`, then the settlements read
        back); its events are posted. Raises ChainError when the chain cannot be used at all."""
        from storage.outbox.settlement import settle_round

        with self._ledger_lock:
            ledger = self.ledger()
            if self.validator_key is not None and self._validator is None:
                self._validator = wiring.open_validator(self.config, ledger, self.store, self.validator_key)
            report = settle_round(self.outbox, ledger, self.key, self._validator)
        for submitted in report.submitted:
            self.post(ev.BatchSubmitted(submitted))
        for batch_id, verdicts in report.verdicts.items():
            self.post(ev.BatchSettled(batch_id, tuple(verdicts)))
        if report.settled:
            self.post(ev.ClipsSettled(report.settled))
        return report

    def rewards(self, address: str | None = None) -> dict | None:
        """`knack rewards ADDRESS`; None while nothing is deployed on the embedded chain."""
        from storage.ledger.rewards import rewards_view

        with self._ledger_lock:
            ledger = self.ledger()
            if ledger.deployment is None:
                return None
            if address is None and not self.config.identity.contributor:
                record = ledger.device(self.key.address)  # the contributor this device is registered to
                address = record.contributor if record is not None else None
            return rewards_view(ledger, address or self.contributor)

    # --- the stages' threads -----------------------------------------------------------------------
    def _clip(self, clip) -> None:
        self.written.append(clip)
        self.counts["written"] += 1
        self.outbox.record(clip.clip_id, clip.path, "recorded")
        if self.labels is not None:
            self.labels.submit(clip.path)
        self.post(ev.ClipWritten(clip))

    def _labeled(self, result) -> None:
        from storage.outbox.pinner import enqueue

        # The decision is in the signed manifest; the outbox takes it from there and the pinner is woken.
        enqueue(self.outbox, result.path)
        self.pinner.wake()
        self.post(ev.ClipLabeled(result))

    def _bind_to_network(self, clip: Path) -> bool:
        """A clip labeled before this device knew its network is re-signed for it before it is pinned; a device
        that still does not know it asks the chain, and the clip waits while the chain cannot say."""
        from collector.bundle import bind_to_network
        from storage.outbox.pinner import PinDeferred

        if self.key.domain is None:
            try:
                ledger = self.ledger()
                if ledger.deployment is None:
                    raise PinDeferred(f"no registry is deployed on {wiring.ledger_name(self.config)} yet: the clip is pinned once there is one")
                self.key = self.key.bind(ledger.domain())
            except PinDeferred:
                raise
            except Exception as exc:  # the chain is down or refuses: the clip waits, signed for no network yet
                raise PinDeferred(f"this device does not know its network yet ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
        return bind_to_network(clip, self.key)

    def _capture_problem(self, text: str | None) -> None:
        self.post(ev.Problem("capture", text) if text else ev.ProblemCleared("capture"))

    def _label_failed(self, clip: Path, reason: str) -> None:
        self.post(ev.LabelFailed(clip.name, reason))

    def _pinned(self, result) -> None:
        self.pinned.append(result)
        self.counts["pin_failed" if result.error else "pinned"] += 1
        self.post(ev.ClipPinned(result))
        if not result.error:
            self.chain.wake()

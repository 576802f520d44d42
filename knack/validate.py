"""`knack validate --watch`: the validator as a long-lived service.

Every `interval` seconds one round settles every pending batch (storage.validator re-checks each clip from
its content, labeling included) and says what it did in JSON log lines; /healthz and /metrics are served as
`knack robot` serves them. A chain that is unreachable, reverts or records another network's model and
policy, or a batch the validator trips over, is one log line and a degraded /healthz, never an exit: the
next round tries again. Rounds run on a thread of their own, so a signal is heard at once; a round in flight
gets the grace period to finish its transaction."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from knack.endpoint import Health, HealthServer, metrics_registry
from knack.logs import LastProblem, event
from knack.signals import StopSignals
from storage.content.ipfs import StoreUnavailable
from storage.ledger.base import ChainError, ChainUnavailable

log = logging.getLogger("knack.validate")
TICK_S = 0.2
# The backlog is growing when the batches waiting at the start of a round went up this many rounds running.
BACKLOG_ROUNDS = 3


# --- one round, in plain values ------------------------------------------------------------------------
@dataclass(frozen=True)
class Round:
    started_at: float  # unix time
    seconds: float
    pending: int | None  # batches waiting when the round began; None when they could not be read
    verdicts: dict = field(default_factory=dict)  # batch id -> [Verdict]
    problem: str | None = None  # why the round failed, one line
    kind: str | None = None  # chain | store | open | batch

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def clips(self) -> int:
        return sum(len(v) for v in self.verdicts.values())


def classify(exc: BaseException, pending: Sequence[int], opened: bool) -> tuple[str, str]:
    """(kind, one line) for what stopped a round. `chain`: the chain is down, reverted or names another network's
    model and policy (a ChainError of any kind); `store`: the content store cannot be reached; `open`: the
    validator could not be opened (its data directory, its configuration); `batch`: anything else raised while
    settling, a bug, named by its batch."""
    text = (str(exc).strip().splitlines() or [""])[0] or type(exc).__name__
    if isinstance(exc, ChainUnavailable):
        return "chain", f"chain unreachable: {text}"
    if isinstance(exc, ChainError):
        return "chain", f"chain: {text}"
    if isinstance(exc, StoreUnavailable):
        return "store", f"content store unreachable: {text}"
    if not opened:
        return "open", f"validator not opened: {type(exc).__name__}: {text}"
    batch = getattr(exc, "batch_id", None)
    ids = [batch] if batch is not None else list(pending)
    which = f"batch {ids[0]}" if len(ids) == 1 else f"batches {', '.join(map(str, ids))}" if ids else "a round with no batch pending"
    return "batch", f"settling {which} failed: {type(exc).__name__}: {text}"


def backlog_growing(pending: Sequence[int], rounds: int = BACKLOG_ROUNDS) -> bool:
    """True when the batches waiting at the start of a round rose `rounds` times running: settling is slower
    than devices submit. Each round settles every batch pending, so a validator that keeps up starts each round
    with about the same few."""
    recent = list(pending)[-(rounds + 1) :]
    return len(recent) == rounds + 1 and all(b > a for a, b in zip(recent, recent[1:]))


def assess(last: Round | None, pending: Sequence[int], interval: float, stopping: bool = False) -> Health:
    """ok: the last round succeeded and the backlog is not growing. Each other case is one sentence."""
    reasons = []
    if stopping:
        reasons.append("stopping: finishing the round in progress")
    if last is None:
        reasons.append("starting: no round has finished yet")
    elif not last.ok:
        reasons.append(f"{last.problem} (tried again every {interval:g} s)")
    if backlog_growing(pending):
        counts = " -> ".join(str(n) for n in list(pending)[-(BACKLOG_ROUNDS + 1) :])
        reasons.append(f"backlog growing: {counts} batches pending at the start of the last {BACKLOG_ROUNDS + 1} rounds (settling is slower than submissions)")
    return Health.of(reasons)


def reason_name(verdict) -> str:
    reason = verdict.reason
    return str(getattr(reason, "name", reason)).lower() if reason is not None else "unknown"


# --- what /metrics reads -------------------------------------------------------------------------------------
@dataclass
class Tally:
    """Totals since the service started, added to by each round."""

    rounds: Counter = field(default_factory=Counter)  # ok / error
    errors: Counter = field(default_factory=Counter)  # chain / store / open / batch
    batches: int = 0
    accepted: int = 0
    rejected: Counter = field(default_factory=Counter)  # reason name -> clips
    clips: int = 0
    settle_seconds: float = 0.0  # wall time of the rounds that settled clips
    last_ok_at: float = 0.0
    last_round_seconds: float = 0.0
    seconds_per_clip: float = 0.0  # of the last round that settled clips

    def add(self, r: Round) -> None:
        self.rounds["ok" if r.ok else "error"] += 1
        self.last_round_seconds = r.seconds
        if not r.ok:
            self.errors[r.kind] += 1
            return
        self.last_ok_at = r.started_at + r.seconds
        self.batches += len(r.verdicts)
        for verdicts in r.verdicts.values():
            for v in verdicts:
                if v.accepted:
                    self.accepted += 1
                else:
                    self.rejected[reason_name(v)] += 1
        if r.clips:
            self.clips += r.clips
            self.settle_seconds += r.seconds
            self.seconds_per_clip = r.seconds / r.clips


@dataclass(frozen=True)
class Snapshot:
    tally: Tally
    pending: int
    provider: str
    address: str
    last_error_at: float
    healthy: bool


class ValidatorCollector(Collector):
    def __init__(self, snapshot: Callable[[], Snapshot]):
        self.snapshot = snapshot

    def collect(self):
        snap = self.snapshot()
        t = snap.tally
        info = GaugeMetricFamily(
            "knack_validator_info", "The validator's account and the execution provider its labeler runs on.", labels=["address", "provider"]
        )
        info.add_metric([snap.address, snap.provider], 1.0)
        yield info
        rounds = CounterMetricFamily("knack_validator_rounds", "Validation rounds, by result.", labels=["result"])
        for result in ("ok", "error"):
            rounds.add_metric([result], t.rounds.get(result, 0))
        yield rounds
        errors = CounterMetricFamily(
            "knack_validator_settle_errors",
            "Rounds that failed: chain (unreachable, reverted, another network's model and policy), store (content store unreachable),"
            " open (the validator could not be opened), batch (a bug).",
            labels=["kind"],
        )
        for kind in ("chain", "store", "open", "batch"):
            errors.add_metric([kind], t.errors.get(kind, 0))
        yield errors
        yield CounterMetricFamily("knack_validator_batches_settled", "Batches settled on chain by this validator.", value=t.batches)
        yield CounterMetricFamily("knack_validator_clips_accepted", "Clips accepted (and paid) by this validator.", value=t.accepted)
        rejected = CounterMetricFamily("knack_validator_clips_rejected", "Clips rejected by this validator, by reason.", labels=["reason"])
        for reason, count in sorted(t.rejected.items()):
            rejected.add_metric([reason], count)
        yield rejected
        yield GaugeMetricFamily("knack_validator_pending_batches", "Batches submitted and not yet settled, as last seen.", value=snap.pending)
        yield GaugeMetricFamily(
            "knack_validator_last_success_timestamp_seconds", "Unix time the last successful round ended (0 before the first).", value=t.last_ok_at
        )
        yield GaugeMetricFamily("knack_validator_round_seconds", "Wall time of the last round.", value=t.last_round_seconds)
        yield GaugeMetricFamily(
            "knack_validator_seconds_per_clip", "Wall seconds per clip of the last round that settled clips, labeling included.", value=t.seconds_per_clip
        )
        yield CounterMetricFamily(
            "knack_validator_settle_seconds",
            "Wall seconds spent in rounds that settled clips (rate over clips settled: seconds per clip).",
            value=t.settle_seconds,
        )
        yield CounterMetricFamily("knack_validator_clips_settled", "Clips settled (accepted or rejected).", value=t.clips)
        yield GaugeMetricFamily(
            "knack_validator_last_error_timestamp_seconds", "Unix time of the last warning or error logged (0 when none).", value=snap.last_error_at
        )
        yield GaugeMetricFamily("knack_validator_healthy", "1 when /healthz says ok, 0 when degraded.", value=1.0 if snap.healthy else 0.0)


def registry_for(snapshot: Callable[[], Snapshot]) -> CollectorRegistry:
    """The validator's metrics plus the process's own (resident memory, open file descriptors, CPU)."""
    return metrics_registry(ValidatorCollector(snapshot))


# --- the real parts ----------------------------------------------------------------------------------------
class ValidatorParts:
    """The validator of a data directory and the ledger and content store under it: opened on first use
    (again after opening failed: a chain not up yet, nothing deployed yet) and closed at the end."""

    def __init__(self, config, key):
        self.config, self.key = config, key
        self.ledger = self.validator = None

    def open(self):
        from knack import wiring

        ledger = wiring.open_ledger(self.config, deployer=self.key)  # the embedded chain deploys itself
        try:
            if ledger.deployment is None:
                raise ChainError(f"no registry deployed on {wiring.ledger_name(self.config)}: run `knack chain deploy`")
            validator = wiring.open_validator(self.config, ledger, wiring.open_store(self.config), self.key)
        except BaseException:
            ledger.close()
            raise
        self.ledger, self.validator = ledger, validator
        return validator

    def close(self) -> None:
        if self.validator is not None and callable(close := getattr(self.validator, "close", None)):
            close()
        if self.ledger is not None:
            self.ledger.close()
        self.ledger = self.validator = None


def provider_of(validator) -> str | None:
    """The execution provider of the validator's labeler (CUDAExecutionProvider, CPUExecutionProvider), where
    the validator says."""
    try:
        provider = getattr(validator, "provider", None)
    except Exception:  # a labeler that cannot load its models says so when it labels, not here
        return None
    return str(provider) if provider else None


# --- the service -------------------------------------------------------------------------------------------
class ValidatorService:
    """`open_validator` gives an object with `pending_batches()` and `run_once()` (storage.validator's); it is
    called on the round thread, again at the next round when it raised."""

    def __init__(
        self,
        open_validator: Callable[[], object],
        *,
        interval: float,
        address: str = "",
        where: str = "",
        health_host: str = "127.0.0.1",
        health_port: int = 0,
        grace_s: float = 30.0,
        close: Callable[[], None] | None = None,
        problems: LastProblem | None = None,
    ):
        self.open_validator, self.close_parts = open_validator, close
        self.interval, self.address, self.where = interval, address, where
        self.health_host, self.health_port, self.grace_s = health_host, health_port, grace_s
        self.problems = problems or LastProblem()
        self.signals = StopSignals("knack.validate", "validator.killed", "a batch not settled yet is settled at the next start")
        self.validator = None
        self.provider: str | None = None
        self.tally = Tally()
        self.last: Round | None = None
        self.backlog: deque = deque(maxlen=BACKLOG_ROUNDS + 1)  # batches pending at the start of recent rounds
        self.pending = 0
        self.stopping = False
        self.finished = True  # False when the grace period ran out with a round still in flight
        self.server: HealthServer | None = None
        self._problem: str | None = None
        self._growing = False
        self._lock = threading.Lock()

    # --- the lifetime ----------------------------------------------------------------------------
    def run(self, install_signals: bool = True) -> int:
        if install_signals:
            self.signals.install()
        self._start_server()
        event(
            log,
            "validator.started",
            "validating batches on %s as %s every %g s",
            self.where or "the chain",
            self.address or "this validator",
            self.interval,
            address=self.address,
            chain=self.where,
            interval_s=self.interval,
            health=self.server.url if self.server else None,
        )
        worker = threading.Thread(target=self._rounds, name="knack-validate", daemon=True)
        worker.start()
        while not self.signals.stop.wait(TICK_S):
            if not worker.is_alive():
                break
        return self.stop(worker)

    def stop(self, worker: threading.Thread) -> int:
        crashed = not worker.is_alive() and not self.signals.stop.is_set()
        self.stopping = True
        self.signals.stop.set()
        if not crashed:
            event(
                log,
                "validator.stopping",
                "%s: finishing the round in flight within %g s",
                self.signals.signal_name or "stop",
                self.grace_s,
                grace_s=self.grace_s,
            )
        worker.join(self.grace_s)
        self.finished = not worker.is_alive()
        if self.finished and self.close_parts is not None:
            self.close_parts()
        if self.server is not None:
            self.server.close()
        t = self.tally
        event(
            log,
            "validator.stopped",
            f"stopped: {t.batches} batch(es) and {t.clips} clip(s) settled this run"
            + ("" if self.finished else "; the grace period ran out in a round, whose batches the next start settles"),
            finished=self.finished,
            batches=t.batches,
            clips=t.clips,
            level=logging.INFO if self.finished and not crashed else logging.ERROR,
        )
        return 1 if crashed else 0

    def _rounds(self) -> None:
        try:
            next_at = time.monotonic()
            while not self.signals.stop.is_set():
                self.round()
                next_at = max(next_at + self.interval, time.monotonic())  # a round longer than the interval: the next at once
                self.signals.stop.wait(next_at - time.monotonic())
        except BaseException:
            log.exception("the round thread ended unexpectedly", extra={"event": "validator.crashed"})
            raise

    def _start_server(self) -> None:
        if not self.health_port:
            return
        try:
            self.server = HealthServer(self.health_host, self.health_port, lambda: self.health().as_dict(), registry_for(self.snapshot)).start()
        except OSError as exc:
            event(
                log,
                "validator.http_failed",
                "no /healthz or /metrics: cannot listen on %s:%d (%s); validating goes on",
                self.health_host,
                self.health_port,
                exc.strerror or exc,
                level=logging.ERROR,
            )

    # --- one round -----------------------------------------------------------------------------------
    def round(self) -> Round:
        """Opens the validator if it is not open, then settles every pending batch. Never raises an Exception."""
        started_at, t0 = time.time(), time.monotonic()
        pending: list[int] | None = None
        opened = self.validator is not None
        try:
            if self.validator is None:
                self.validator = self.open_validator()
                opened = True
                self.provider = provider_of(self.validator)
                event(
                    log,
                    "validator.ready",
                    f"validator ready; labeling on {self.provider}"
                    if self.provider
                    else "validator ready; its labeler picks an execution provider at the first clip",
                    provider=self.provider,
                )
            pending = [b.batch_id for b in self.validator.pending_batches()]
            verdicts = self.validator.run_once()
        except Exception as exc:
            kind, problem = classify(exc, pending or [], opened)
            result = Round(started_at, time.monotonic() - t0, None if pending is None else len(pending), problem=problem, kind=kind)
            self._record(result, exc)
            return result
        result = Round(started_at, time.monotonic() - t0, len(pending), verdicts)
        self._record(result)
        return result

    def _record(self, r: Round, exc: BaseException | None = None) -> None:
        with self._lock:
            self.tally.add(r)
            self.last = r
            if r.pending is not None:
                self.backlog.append(r.pending)
                self.pending = max(0, r.pending - len(r.verdicts))  # those that came in during the round are seen next round
        if not r.ok:
            if r.problem != self._problem:  # said once per problem, not every interval
                if r.kind == "batch":
                    log.error("%s", r.problem, exc_info=exc, extra={"event": "validator.problem", "fields": {"kind": r.kind}})
                else:
                    event(log, "validator.problem", "round failed, trying again every %g s: %s", self.interval, r.problem, level=logging.WARNING, kind=r.kind)
            self._problem = r.problem
            return
        if self._problem is not None:
            event(log, "validator.ok", "rounds succeed again")
            self._problem = None
        provider = provider_of(self.validator)
        if provider and provider != self.provider:
            self.provider = provider
            event(log, "validator.provider", "labeling on %s", provider, provider=provider)
        for batch_id, verdicts in r.verdicts.items():
            self._log_batch(batch_id, verdicts)
        if r.clips:
            event(
                log,
                "validator.round",
                "settled %d batch(es), %d clip(s) in %.1f s (%.2f s per clip)",
                len(r.verdicts),
                r.clips,
                r.seconds,
                r.seconds / r.clips,
                batches=len(r.verdicts),
                clips=r.clips,
                seconds=round(r.seconds, 3),
                seconds_per_clip=round(r.seconds / r.clips, 3),
                pending=r.pending,
                provider=self.provider,
            )
        growing = backlog_growing(self.backlog)
        if growing and not self._growing:
            event(log, "validator.backlog", "the backlog is growing: %s batches pending", list(self.backlog), level=logging.WARNING, pending=list(self.backlog))
        self._growing = growing

    def _log_batch(self, batch_id: int, verdicts) -> None:
        accepted = sum(v.accepted for v in verdicts)
        event(
            log,
            "batch.settled",
            "batch %d settled: %d accepted, %d rejected",
            batch_id,
            accepted,
            len(verdicts) - accepted,
            batch=batch_id,
            accepted=accepted,
            rejected=len(verdicts) - accepted,
        )
        for v in verdicts:
            if not v.accepted:
                text = getattr(v.reason, "text", str(v.reason))
                event(
                    log,
                    "clip.rejected",
                    "batch %d: rejected %s: %s%s",
                    batch_id,
                    v.cid,
                    text,
                    f" ({v.detail})" if v.detail else "",
                    batch=batch_id,
                    cid=v.cid,
                    reason=reason_name(v),
                    detail=v.detail,
                )

    # --- what /healthz and /metrics read -----------------------------------------------------------
    def health(self) -> Health:
        with self._lock:
            return assess(self.last, list(self.backlog), self.interval, self.stopping)

    def snapshot(self) -> Snapshot:
        healthy = self.health().ok
        with self._lock:
            tally = Tally(**{f: (v.copy() if isinstance(v, Counter) else v) for f, v in vars(self.tally).items()})
            return Snapshot(tally, self.pending, self.provider or "unknown", self.address, self.problems.at, healthy)

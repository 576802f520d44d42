"""`knack robot`: the collector pipeline of `knack record` run headless for days, as a systemd service.

The device session (capture -> label -> pin -> submit -> settle) is knack.session's, the same one `knack
record`, the app and the demo run; this module adds what a service needs around it: disk limits, signals,
JSON log lines for the session's events, a status line, and the snapshot that /healthz and /metrics read.
Its main thread only watches and decides; every slow step runs in a thread of its own, so a signal is
acted on within a fraction of a second."""

from __future__ import annotations

import dataclasses
import logging
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable

from collector.config import Config, ConfigError
from knack import events as ev
from knack import wiring
from knack.logs import LastProblem, event
from knack.session import DeviceSession
from knack.signals import StopSignals
from robot import disk
from robot.health import Health, StreamHealth, assess
from robot.metrics import Snapshot, StreamSnapshot, registry_for

log = logging.getLogger("knack.robot")
TICK_S = 0.2
DISK_EVERY_S = 10.0
PRUNE_EVERY_S = 600.0
HISTORY = 64  # results of recent clips kept in memory; totals are counters
# A problem seen this recently makes /healthz degraded.
RECENT_S = 120.0
# The parts of the configuration a reload can change without a new capture session.
SERVICE_ONLY = ("robot", "source")


class Signals(StopSignals):
    """knack.signals' graceful stop (the second SIGTERM/SIGINT exits at once), and SIGHUP: reload."""

    def __init__(self) -> None:
        # Safe to end at the second signal: clips are written under a temporary name and renamed when whole,
        # and every outbox step is one SQLite transaction; the next start salvages a half-written clip.
        super().__init__("knack.robot", "robot.killed", "the next start recovers the open clip")
        self.reload = threading.Event()

    def install(self) -> None:
        super().install()
        signal.signal(signal.SIGHUP, self._on_reload)

    def _on_reload(self, signum, frame) -> None:
        self.reload.set()


class RobotService:
    def __init__(self, config: Config, key, load_config: Callable[[], Config] | None = None, validator_key=None, problems: LastProblem | None = None):
        self.config, self.key, self.validator_key = config, key, validator_key
        self.load_config = load_config
        self.problems = problems or LastProblem()
        self.signals = Signals()
        self.session: DeviceSession | None = None
        self.server = None
        self.carried: Counter = Counter()  # counts of sessions replaced by a reload
        self.pruned = 0
        self.paused_because: str | None = None
        self.stopping = False
        self.finished = True  # False when the grace period cut labeling or pinning short
        self.usage = disk.DiskUsage(0, 0)
        self.outbox_rebuilt: tuple[float, str] | None = None  # (monotonic time, what happened)

    # --- the lifetime ----------------------------------------------------------------------------
    def run(self, install_signals: bool = True) -> int:
        if install_signals:
            self.signals.install()
        self.usage = disk.measure(self.config.data_path) if self.config.data_path.exists() else disk.DiskUsage(0, 0)
        self._start_session(record=True)
        self._start_server()
        event(
            log,
            "robot.started",
            "recording to %s as device %s",
            self.config.clips_path,
            self.key.address,
            device=self.key.address,
            data_dir=str(self.config.data_path),
            config=self.config.source,
            streams=[s.name for s in self.session.recorder.sources],
            health=self._health_url(),
        )
        last_disk = last_prune = last_status = time.monotonic()
        self._check_disk()
        self._prune()
        while not self.signals.stop.wait(TICK_S):
            now = time.monotonic()
            if self.signals.reload.is_set():
                self.signals.reload.clear()
                self.reload()
            if now - last_disk >= DISK_EVERY_S:
                last_disk = now
                self._check_disk()
            if now - last_prune >= PRUNE_EVERY_S:
                last_prune = now
                self._prune()
            if now - last_status >= self.config.robot.status_every_s:
                last_status = now
                self._status()
        return self.stop()

    def stop(self) -> int:
        """Seals the open clip and finishes labeling, pinning and one last chain round within the grace period."""
        self.stopping = True
        grace = self.config.robot.grace_s
        event(log, "robot.stopping", "%s: sealing the open clip, finishing within %g s", self.signals.signal_name or "stop", grace, grace_s=grace)
        finished = self.finished = self.session.close(timeout=grace)  # a last chain round included
        counts = self.session.outbox.counts()
        self._status()
        if self.server is not None:
            self.server.close()
        event(
            log,
            "robot.stopped",
            f"stopped: {self.session.counts['written']} clip(s) written this run; outbox {', '.join(f'{n} {s}' for s, n in counts.items() if n)}"
            + ("" if finished else "; labeling or pinning was cut short by the grace period and resumes at the next start"),
            finished=finished,
            clips=counts,
        )
        return 0

    def reload(self) -> None:
        """SIGHUP: read the configuration again. A bad file is reported and the running one kept; a change to
        sources, labeling or storage starts a new capture session (the open clip is sealed first)."""
        if self.load_config is None:
            return
        try:
            new = self.load_config()
        except (ConfigError, OSError) as exc:
            event(log, "robot.reload_failed", "configuration not reloaded, keeping the running one: %s", exc, level=logging.ERROR)
            return
        old = self.config
        strip = lambda c: dataclasses.replace(c, **{f: getattr(Config(), f) for f in SERVICE_ONLY})  # noqa: E731
        self.config = new
        if strip(new) != strip(old):
            event(log, "robot.reloading", "configuration changed: sealing the open clip and restarting capture")
            if self.session.close(timeout=new.robot.grace_s):
                self.session.outbox.close()  # the new session opens its own; a stage still at work keeps this one
            self.carried.update(self._session_counts())
            self._start_session(record=self.paused_because is None)
        else:
            self.session.config = new
            self.session.chain.interval = new.robot.chain_every_s
        if (new.robot.health_host, new.robot.health_port) != (old.robot.health_host, old.robot.health_port):
            if self.server is not None:
                self.server.close()
                self.server = None
            self._start_server()
        event(log, "robot.reloaded", "configuration reloaded from %s", new.source, config=new.source)

    def _start_session(self, record: bool) -> None:
        from storage.outbox.db import OutboxDamaged

        try:
            session = DeviceSession(self.config, self.key, validator_key=self.validator_key, history=HISTORY, listener=self._on_event)
        except OutboxDamaged as exc:
            # Exiting would have systemd restart the service into the same error for ever, recording nothing:
            # the outbox is rebuilt from what does not depend on it, and /healthz says so for a while.
            event(log, "outbox.damaged", "%s; rebuilding it now", exc, level=logging.ERROR)
            rebuilt = wiring.rebuild_outbox(self.config, say=lambda line: event(log, "outbox.rebuild", "%s", line, level=logging.WARNING))
            counts = {state: n for state, n in rebuilt.outbox.counts().items() if n}
            rebuilt.outbox.close()
            kept = ", ".join(str(p) for p in rebuilt.kept)
            self.outbox_rebuilt = (time.monotonic(), f"the outbox was damaged ({exc.problem}) and was rebuilt at start; the damaged file is kept as {kept}")
            event(log, "outbox.rebuilt", "outbox rebuilt: %s; damaged file kept as %s", counts, kept, clips=counts, kept=kept, level=logging.WARNING)
            session = DeviceSession(self.config, self.key, validator_key=self.validator_key, history=HISTORY, listener=self._on_event)
        self.session = session.start(record=record)  # set once started: /healthz and /metrics read it
        for message in self.session.recorder.recovered:
            event(log, "clip.recovered", "%s", message, level=logging.WARNING)
        if self.session.backlog:
            event(log, "label.backlog", "%d earlier clip(s) not labeled yet: labeling them first", len(self.session.backlog), clips=len(self.session.backlog))

    def _start_server(self) -> None:
        from knack.endpoint import HealthServer

        robot = self.config.robot
        if not robot.health_port:
            return
        try:
            self.server = HealthServer(robot.health_host, robot.health_port, lambda: self.health().as_dict(), registry_for(self.snapshot)).start()
        except OSError as exc:
            event(
                log,
                "robot.http_failed",
                "no /healthz or /metrics: cannot listen on %s:%d (%s); recording goes on",
                robot.health_host,
                robot.health_port,
                exc.strerror or exc,
                level=logging.ERROR,
            )

    def _health_url(self) -> str | None:
        return self.server.url if self.server else None

    # --- what the main loop decides -------------------------------------------------------------
    def _check_disk(self) -> None:
        robot = self.config.robot
        self.usage = disk.measure(self.config.data_path)
        why = disk.pause_reason(self.usage, robot.disk_quota_mb, robot.min_free_mb, paused=self.paused_because is not None)
        if why and self.paused_because is None:
            self.paused_because = why
            self.session.recorder.stop_clip()
            event(log, "robot.paused", "recording paused, the open clip is sealed: %s", why, level=logging.WARNING, reason=why)
            self._prune()
        elif not why and self.paused_because is not None:
            self.paused_because = None
            self.session.recorder.start_clip()
            event(log, "robot.resumed", "recording resumed: the disk has room again")

    def _prune(self) -> None:
        from storage.outbox.discard import DiscardError, discard

        ids = disk.prunable(self.session.outbox.entries(), time.time(), self.config.robot.prune_rejected_after_h)
        for clip_id in ids:
            try:
                discard(self.session.outbox, self.config.clips_path, clip_id)
            except (DiscardError, OSError) as exc:
                event(log, "clip.prune_failed", "rejected clip %s not pruned: %s", clip_id, exc, level=logging.WARNING)
                continue
            self.pruned += 1
        if ids:
            event(log, "clip.pruned", "pruned %d rejected clip(s) older than %g h", len(ids), self.config.robot.prune_rejected_after_h, clips=len(ids))

    def _status(self) -> None:
        snap = self.snapshot()
        state = "recording" if snap.recording else f"paused: {snap.paused_because}" if snap.paused_because else "not recording"
        event(
            log,
            "robot.status",
            f"{state}; outbox {', '.join(f'{n} {s}' for s, n in snap.clips_by_state.items() if n) or 'empty'}",
            streams={
                s.name: {
                    "state": s.state,
                    "rate": round(s.rate, 1),
                    "received": s.received,
                    "dropped": s.dropped,
                    "lost": s.lost,
                    "late": s.late,
                    "parse_errors": sum(s.errors.values()),
                }
                for s in snap.streams
            },
            clips=snap.clips_by_state,
            upload_lag_s=round(snap.upload_lag_s, 1),
            label_queue=snap.label_queue,
        )

    # --- the session's events, as JSON log lines (posted from the stages' threads) --------------------
    def _on_event(self, happened: ev.Event) -> None:
        match happened:
            case ev.ClipWritten(clip):
                event(
                    log,
                    "clip.written",
                    "clip %s: %d frames, %d samples",
                    clip.clip_id,
                    clip.frames,
                    clip.samples,
                    clip=clip.clip_id,
                    frames=clip.frames,
                    samples=clip.samples,
                )
            case ev.ClipLabeled(result):
                event(
                    log,
                    "clip.labeled",
                    "clip %s %s",
                    result.clip_id,
                    "accepted" if result.accepted else result.summary,
                    clip=result.clip_id,
                    accepted=result.accepted,
                    quality=round(result.score, 3),
                )
            case ev.ClipPinned(result) if result.error:
                event(log, "clip.pin_failed", "clip %s not pinned yet: %s", result.clip_id, result.error, level=logging.WARNING, clip=result.clip_id)
            case ev.ClipPinned(result):
                event(log, "clip.pinned", "clip %s pinned as %s", result.clip_id, result.cid, clip=result.clip_id, cid=result.cid)
            case ev.BatchSubmitted(s) if not s.error:
                event(
                    log,
                    "chain.submitted",
                    "batch %s of %d clip(s) submitted",
                    s.batch_id,
                    len(s.clip_ids),
                    batch=s.batch_id,
                    clips=len(s.clip_ids),
                    tx=s.tx_hash,
                )
            case ev.ClipsSettled(count):
                event(log, "chain.settled", "%d clip(s) settled on chain", count, clips=count)
            case ev.Problem("chain", text):
                event(log, "chain.problem", "chain round failed, clips wait in the outbox: %s", text, level=logging.WARNING)
            case ev.ProblemCleared("chain"):
                event(log, "chain.ok", "chain reachable again")
            case ev.Problem("capture", text):
                event(log, "capture.problem", "%s", text, level=logging.ERROR)
            case ev.ProblemCleared("capture"):
                event(log, "capture.ok", "capture is running again")

    # --- what /healthz and /metrics read ---------------------------------------------------------
    def _session_counts(self) -> Counter:
        labels = self.session.labels.counts if self.session.labels is not None else Counter()
        return self.session.counts + Counter({"accepted": labels["accepted"], "rejected": labels["rejected"], "label_failed": labels["failed"]})

    def snapshot(self) -> Snapshot:
        session = self.session
        streams = [
            StreamSnapshot(s.name, s.kind, s.stats.state, s.stats.received, s.stats.dropped, s.stats.late, s.stats.lost, dict(s.stats.errors), s.stats.rate)
            for s in session.recorder.sources
        ]
        oldest = session.outbox.oldest_pending()
        counts = self.carried + self._session_counts()
        counts["pruned"] = self.pruned
        recording = session.recorder.recording
        return Snapshot(
            streams=streams,
            clips_by_state=session.outbox.counts(),
            counts=dict(counts),
            recording=recording and not self.stopping and self.paused_because is None,
            paused_because=self.paused_because,
            upload_lag_s=max(0.0, time.time() - oldest.created) if oldest else 0.0,
            last_error_at=self.problems.at,
            label_queue=session.labels.pending if session.labels is not None else 0,
            data_bytes=self.usage.data_bytes,
            free_bytes=self.usage.free_bytes,
            chain_rounds=dict(session.chain.rounds),
            health_ok=self.health().ok,
        )

    def health(self) -> Health:
        session = self.session
        streams = [StreamHealth(s.name, s.kind, s.stats.state, s.stats.last_error) for s in session.recorder.sources]
        store_problem = None
        waiting = session.outbox.due("accepted", now=float("inf"))
        failing = [e for e in waiting if e.attempts and e.last_error]
        if failing:
            store_problem = failing[0].last_error
        label_problem = None
        if session.labels is not None and session.labels.failed and self.problems.since(RECENT_S):
            clip, why = session.labels.failed[-1]
            label_problem = f"clip {clip.name} not labeled: {why}"
        outbox_problem = self.outbox_rebuilt[1] if self.outbox_rebuilt and time.monotonic() - self.outbox_rebuilt[0] < RECENT_S else None
        capture_problem = session.recorder.problem  # a capture process that crashed, until it runs again
        return assess(
            streams,
            recording=self.paused_because is None and not self.stopping,
            paused_because=self.paused_because,
            chain_problem=session.chain.problem,
            store_problem=store_problem,
            label_problem=label_problem,
            outbox_problem=outbox_problem,
            capture_problem=capture_problem,
            stopping=self.stopping,
        )

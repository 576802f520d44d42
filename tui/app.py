"""`knack tui`: the operator's app. Each screen shows what a `knack` command shows, and each key runs what a
`knack` command runs, through `tui.session.Session`; capture never waits on the UI."""
from __future__ import annotations

import logging
import time
from collections import deque
from pathlib import Path

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.message import Message

from tui.screens.clips import ClipsScreen
from tui.screens.devices import DevicesScreen
from tui.screens.help import HelpScreen
from tui.screens.log import LogScreen
from tui.screens.record import RecordScreen
from tui.screens.rewards import RewardsScreen
from tui.session import Event, Session

CHAIN_EVERY_S = 3.0  # how often pinned clips are submitted and settlements read back


class LogLine(Message):
    def __init__(self, line: str, level: int):
        super().__init__()
        self.line, self.level = line, level


class SessionEvent(Message):
    def __init__(self, event: Event):
        super().__init__()
        self.event = event


class AppLogHandler(logging.Handler):
    """Hands log records from any thread to the app as messages (posting never blocks the caller)."""

    def __init__(self, app: "KnackApp"):
        super().__init__(logging.INFO)
        self.app = app
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.app.post_message(LogLine(self.format(record), record.levelno))
        except Exception:
            self.handleError(record)


class KnackApp(App):
    TITLE = "Knack"
    CSS_PATH = "knack.tcss"
    MODES = {"record": RecordScreen, "clips": ClipsScreen, "rewards": RewardsScreen, "devices": DevicesScreen, "log": LogScreen}
    DEFAULT_MODE = "record"
    BINDINGS = [
        Binding("1", "switch_mode('record')", "Record"),
        Binding("2", "switch_mode('clips')", "Clips"),
        Binding("3", "switch_mode('rewards')", "Rewards"),
        Binding("4", "switch_mode('devices')", "Devices"),
        Binding("5", "switch_mode('log')", "Log"),
        Binding("S", "settle", "Submit now"),
        Binding("question_mark,f1", "help", "Help"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, session: Session, demo: bool = False, graphics: bool = False):
        super().__init__()
        self.session = session
        self.demo = demo
        self.graphics = graphics  # camera previews as real images (Kitty/Sixel terminals)
        self.sub_title = f"device {session.key.address}" + ("  (demo)" if demo else "")
        self.clip_started: float | None = None
        self.marks = 0
        self.log_lines: deque[str] = deque(maxlen=5000)
        self.log_handler = AppLogHandler(self)
        session.on_event = lambda event: self.post_message(SessionEvent(event))

    def on_mount(self) -> None:
        logging.getLogger().addHandler(self.log_handler)
        session = self.session
        self.say(f"session started: {len(session.recorder.sources)} source(s), clips in {session.config.clips_path}")
        for line in session.recorder.recovered:
            self.say(line, logging.WARNING)
        if self.demo:
            policy = session.config.policy
            self.say(f"demo: the sample video loops as camera and this device validates its own clips; policy relaxed to min_hand_fraction {policy.min_hand_fraction:g}, min_sharpness {policy.min_sharpness:g}")
        if session.backlog:
            self.say(f"{len(session.backlog)} earlier clip(s) not labeled yet: labeling them in the background")
        self.last_chain_error = ""
        self.set_interval(CHAIN_EVERY_S, self.chain_round)

    def on_unmount(self) -> None:
        logging.getLogger().removeHandler(self.log_handler)

    # --- what the app is told --------------------------------------------------------------------
    def say(self, line: str, level: int = logging.INFO) -> None:
        self.log_lines.append(line)
        if isinstance(self.screen, LogScreen):
            self.screen.append(line)

    def on_log_line(self, message: LogLine) -> None:
        self.say(message.line, message.level)
        if message.level >= logging.WARNING:
            self.notify(message.line.split(": ", 1)[-1], severity="error" if message.level >= logging.ERROR else "warning", timeout=6)

    def on_session_event(self, message: SessionEvent) -> None:
        kind, item = message.event.kind, message.event.payload
        if kind == "clip":
            self.say(f"clip {item.clip_id}: {item.frames} frames, {item.samples} samples -> {item.path}")
        elif kind == "labeled":
            self.say(f"{'ACCEPTED' if item.accepted else 'REJECTED'} {item.clip_id}  quality {item.score:.2f}  {'' if item.accepted else item.summary}")
        elif kind == "pinned":
            self.say(f"{'pinned' if not item.error else 'not pinned'} {item.clip_id} {item.cid or ''} {item.error}")

    # --- actions (each one a `knack` command too; see the help screen) ------------------------------
    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_start_clip(self) -> None:
        self.session.recorder.start_clip()
        self.clip_started = time.monotonic()
        self.say("clip started")

    def action_stop_clip(self) -> None:
        self.session.recorder.stop_clip()
        self.clip_started = None
        self.say("clip stopped")

    def action_split_clip(self) -> None:
        self.session.recorder.split()
        if self.clip_started is not None:
            self.clip_started = time.monotonic()
        self.say("clip split")

    def action_mark(self) -> None:
        self.session.recorder.mark()
        self.marks += 1
        self.say(f"moment marked ({self.marks})")
        self.notify("moment marked", timeout=2)

    def retry_uploads(self, clip_ids: list[str] | None = None) -> None:
        count = self.session.retry(clip_ids)
        self.say(f"retry: {count} clip(s) will be tried again now")
        self.notify(f"{count} clip(s) will be tried again now", timeout=3)

    def discard(self, clip_id: str) -> None:
        from storage.outbox.discard import DiscardError

        try:
            self.session.discard(clip_id)
        except (DiscardError, OSError) as exc:
            self.notify(str(exc), severity="error", timeout=6)
            return
        self.say(f"discarded {clip_id}")
        self.notify(f"discarded {clip_id}", timeout=3)

    def relabel(self, clip: Path) -> None:
        if self.session.relabel(clip):
            self.say(f"labeling {clip.name} again")
            self.notify(f"labeling {clip.name} again", timeout=3)
        else:
            self.notify("labeling is off (labeler.label_on_record = false): use `knack label`", severity="warning")

    def action_retry_all(self) -> None:
        self.retry_uploads(None)

    def action_settle(self) -> None:
        self.notify("submitting pinned clips now…", timeout=2)
        self.chain_round(force=True)

    @work(thread=True, exclusive=True, group="chain", exit_on_error=False)
    def chain_round(self, force: bool = False) -> None:
        """`knack submit` (and in a demo `knack validate`) when clips wait for the chain; in a thread worker,
        so a slow or unreachable chain never holds up the screen."""
        counts = self.session.outbox.counts()
        if not force and counts["pinned"] + counts["submitted"] == 0:
            return
        log = logging.getLogger("knack.tui")
        try:
            report = self.session.settle()
        except Exception as exc:  # an unreachable chain or a reverted transaction: the outbox retries later
            if str(exc) != self.last_chain_error or force:
                self.last_chain_error = str(exc)
                log.error("chain: %s (the clips wait in the outbox and are tried again)", exc)
            return
        self.last_chain_error = ""
        for result in report.submitted:
            if result.error:
                log.warning("not submitted: %s", result.error)
            else:
                log.info("batch %s: %d clip(s) submitted in %s", result.batch_id, len(result.clip_ids), result.tx_hash)
        for batch_id, verdicts in report.verdicts.items():
            accepted = sum(v.accepted for v in verdicts)
            log.info("batch %s settled by the validator: %d accepted, %d rejected", batch_id, accepted, len(verdicts) - accepted)
        if report.settled:
            self.call_from_thread(self.notify, f"{report.settled} clip(s) settled: see Rewards (3)", timeout=4)
        if force or report.settled:
            self.call_from_thread(self.refresh_rewards)

    def refresh_rewards(self) -> None:
        if isinstance(self.screen, RewardsScreen):
            self.screen.action_refresh()

    def get_system_commands(self, screen):
        yield from super().get_system_commands(screen)
        yield SystemCommand("Start clip", "Start cutting a clip now (r)", self.action_start_clip)
        yield SystemCommand("Stop clip", "Seal the clip being recorded (s)", self.action_stop_clip)
        yield SystemCommand("Split clip", "End this clip and start the next (x)", self.action_split_clip)
        yield SystemCommand("Mark moment", "Mark this moment in the clip (m)", self.action_mark)
        yield SystemCommand("Retry uploads", "Try every waiting or failed upload again now (knack retry)", self.action_retry_all)
        yield SystemCommand("Submit and settle", "Submit pinned clips; in a demo also validate and settle (S)", self.action_settle)
        for mode in self.MODES:
            yield SystemCommand(f"Show {mode}", f"Switch to the {mode} screen", lambda m=mode: self.switch_mode(m))
        yield SystemCommand("Help", "Keys and their commands (?)", self.action_help)


def run(config, key, demo: bool = False, validator_key=None) -> int:
    """Runs the app over a session; on quit the open clip is sealed and queued clips are labeled."""
    from tui.widgets import graphics_preview

    graphics = graphics_preview()
    session = Session(config, key, validator_key=validator_key)
    root = logging.getLogger()
    # The terminal belongs to the app: log lines go to the Log screen instead of stderr.
    saved = root.handlers[:]
    root.handlers = [h for h in saved if not isinstance(h, logging.StreamHandler) or isinstance(h, logging.FileHandler)]
    try:
        session.start(record=False)
        KnackApp(session, demo=demo, graphics=graphics).run()
    finally:
        root.handlers = saved
        waiting = session.labels.pending if session.labels is not None else 0
        print(f"sealing the open clip{f' and labeling {waiting} queued clip(s)' if waiting else ''}…", flush=True)
        session.close()
    counts = session.outbox.counts()
    print("outbox: " + "  ".join(f"{state} {n}" for state, n in counts.items() if n) + "   (knack clips, knack status)")
    return 0

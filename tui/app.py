"""`knack tui`: the operator's app. Each screen shows what a `knack` command shows, and each key runs what a
`knack` command runs, through the one device session (knack.session.DeviceSession); capture never waits on
the UI. The session's typed events arrive as messages (tui.messages); what the screens show of them is kept
in reactive attributes here."""

from __future__ import annotations

import logging
import time
from collections import deque
from pathlib import Path

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.message import Message
from textual.reactive import reactive
from textual.worker import get_current_worker

from knack import events as ev
from knack.session import DeviceSession
from tui import messages as msg
from tui.screens.clips import ClipsScreen
from tui.screens.devices import DevicesScreen
from tui.screens.help import HelpScreen
from tui.screens.log import LogScreen
from tui.screens.record import RecordScreen
from tui.screens.rewards import RewardsScreen

CHAIN_EVERY_S = 3.0  # how often the session submits pinned clips and reads settlements back


class AppLogHandler(logging.Handler):
    """Hands log records from any thread to the app as messages (posting never blocks the caller)."""

    def __init__(self, app: KnackApp):
        super().__init__(logging.INFO)
        self.app = app
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.app.post_message(msg.LogLine(self.format(record), record.levelno))
        except Exception:
            self.handleError(record)


class KnackApp(App):
    TITLE = "Knack"
    CSS_PATH = Path(__file__).with_name("knack.tcss")  # absolute: a subclass elsewhere finds it too
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

    clip_started: reactive[float | None] = reactive(None)  # monotonic time the open clip began; None: idle
    marks: reactive[int] = reactive(0)  # moments marked in this run
    clips_written: reactive[int] = reactive(0)  # clips sealed in this run
    clip_counts: reactive[dict[str, int]] = reactive(dict)  # the outbox: clips by state
    chain_problem: reactive[str | None] = reactive(None)  # why the chain cannot be used now, if it cannot
    task_text: reactive[str] = reactive("")  # the task being done, as the operator last named it (`task` is Textual's)

    def __init__(self, session: DeviceSession, demo: bool = False, graphics: bool = False):
        super().__init__()
        self.session = session
        self.demo = demo
        self.graphics = graphics  # camera previews as real images (Kitty/Sixel terminals)
        self.sub_title = f"device {session.key.address}" + ("  (demo)" if demo else "")
        self.log_lines: deque[str] = deque(maxlen=5000)
        self.log_handler = AppLogHandler(self)
        self.set_reactive(KnackApp.task_text, session.task)
        session.listener = self.hear

    def hear(self, event: ev.Event) -> None:
        """The session's listener, called on its stage threads: posting is thread-safe and never blocks."""
        if (message := msg.message_for(event)) is not None:
            self.post_message(message)

    def on_mount(self) -> None:
        logging.getLogger().addHandler(self.log_handler)
        session = self.session
        self.say(f"session started: {len(session.recorder.sources)} source(s), clips in {session.config.clips_path}")
        for line in session.recorder.recovered:
            self.say(line, logging.WARNING)
        if self.demo:
            self.say("demo: the sample video loops as camera and this device validates its own clips")
        if session.backlog:
            self.say(f"{len(session.backlog)} earlier clip(s) not labeled yet: labeling them in the background")
        self.count_clips()

    def on_unmount(self) -> None:
        logging.getLogger().removeHandler(self.log_handler)

    # --- what the app is told --------------------------------------------------------------------
    def say(self, line: str, level: int = logging.INFO) -> None:
        self.log_lines.append(line)
        if isinstance(self.screen, LogScreen):
            self.screen.append(line)

    def warn(self, line: str, level: int = logging.WARNING) -> None:
        self.say(line, level)
        self.notify(line, severity="error" if level >= logging.ERROR else "warning", timeout=6)

    def on_log_line(self, message: msg.LogLine) -> None:
        self.say(message.line, message.level)
        if message.level >= logging.WARNING:
            self.notify(message.line.split(": ", 1)[-1], severity="error" if message.level >= logging.ERROR else "warning", timeout=6)

    def tell_screen(self, message: Message) -> None:
        """Hands a session message on to the screen in view; a screen shown later reads afresh on resume."""
        self.screen.post_message(message)

    @work(thread=True, exclusive=True, group="counts")
    def count_clips(self) -> None:
        """Reads the outbox's counts in a thread: a slow disk never stalls the screen."""
        worker = get_current_worker()
        counts = {state: n for state, n in self.session.outbox.counts().items() if n}
        # A count asked for since (a newer event) read later: this one's would be older than that.
        self.call_from_thread(lambda: worker.is_cancelled or setattr(self, "clip_counts", counts))

    def on_clip_written(self, message: msg.ClipWritten) -> None:
        clip = message.clip
        self.clips_written += 1
        self.say(f"clip {clip.clip_id}: {clip.frames} frames, {clip.samples} samples -> {clip.path}")
        self.count_clips()
        self.tell_screen(message)

    def on_clip_labeled(self, message: msg.ClipLabeled) -> None:
        result = message.result
        self.say(f"{'ACCEPTED' if result.accepted else 'REJECTED'} {result.clip_id}  quality {result.score:.2f}  {'' if result.accepted else result.summary}")
        self.count_clips()
        self.tell_screen(message)

    def on_label_failed(self, message: msg.LabelFailed) -> None:
        self.warn(f"clip {message.clip_id} was not labeled: {message.reason} (l on Clips tries again)")
        self.tell_screen(message)

    def on_clip_pinned(self, message: msg.ClipPinned) -> None:
        result = message.result
        self.say(f"{'pinned' if not result.error else 'not pinned'} {result.clip_id} {result.cid or ''} {result.error}")
        self.count_clips()
        self.tell_screen(message)

    def on_batch_submitted(self, message: msg.BatchSubmitted) -> None:
        submitted = message.submitted
        if submitted.error:
            self.warn(f"not submitted: {submitted.error}")
        else:
            self.say(f"batch {submitted.batch_id}: {len(submitted.clip_ids)} clip(s) submitted in {submitted.tx_hash}")
        self.count_clips()
        self.tell_screen(message)

    def on_batch_settled(self, message: msg.BatchSettled) -> None:
        accepted = sum(v.accepted for v in message.verdicts)
        self.say(f"batch {message.batch_id} settled by the validator: {accepted} accepted, {len(message.verdicts) - accepted} rejected")
        self.tell_screen(message)

    def on_clips_settled(self, message: msg.ClipsSettled) -> None:
        self.say(f"{message.count} clip(s) settled on chain")
        self.notify(f"{message.count} clip(s) settled: see Rewards (3)", timeout=4)
        self.count_clips()
        self.tell_screen(message)

    def on_task_changed(self, message: msg.TaskChanged) -> None:
        self.task_text = message.task
        self.say(f"task: {message.task}" if message.task else "task: none named")
        self.tell_screen(message)

    def on_problem(self, message: msg.Problem) -> None:
        if message.part == "chain":
            self.chain_problem = message.text
        waiting = "" if message.part == "capture" else " (the clips wait in the outbox and are tried again)"
        self.warn(f"{message.part}: {message.text}{waiting}", logging.ERROR)
        self.tell_screen(message)

    def on_problem_cleared(self, message: msg.ProblemCleared) -> None:
        if message.part == "chain":
            self.chain_problem = None
        self.say(f"{message.part}: {'running again' if message.part == 'capture' else 'reachable again'}")
        self.tell_screen(message)

    # --- what a screen asks for ----------------------------------------------------------------------
    def on_retry_requested(self, message: msg.RetryRequested) -> None:
        count = self.session.retry(message.clip_ids)
        self.say(f"retry: {count} clip(s) will be tried again now")
        self.notify(f"{count} clip(s) will be tried again now", timeout=3)

    def on_relabel_requested(self, message: msg.RelabelRequested) -> None:
        if self.session.relabel(message.path):
            self.say(f"labeling {message.path.name} again")
            self.notify(f"labeling {message.path.name} again", timeout=3)
        else:
            self.notify("labeling is off (labeler.label_on_record = false): use `knack label`", severity="warning")

    def on_task_requested(self, message: msg.TaskRequested) -> None:
        try:
            self.session.set_task(message.text)  # its TaskChanged says what came of it
        except ValueError as exc:
            self.notify(f"not a task: {exc}", severity="error", timeout=6)

    def on_discard_requested(self, message: msg.DiscardRequested) -> None:
        from storage.outbox.discard import DiscardError

        try:
            self.session.discard(message.clip_id)
        except (DiscardError, OSError) as exc:
            self.notify(str(exc), severity="error", timeout=6)
            return
        self.say(f"discarded {message.clip_id}")
        self.notify(f"discarded {message.clip_id}", timeout=3)
        self.count_clips()
        self.tell_screen(msg.ClipDiscarded(message.clip_id))

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

    def action_retry_all(self) -> None:
        self.post_message(msg.RetryRequested(None))

    def action_settle(self) -> None:
        """`knack submit` (and in a demo `knack validate`) now, on the session's chain thread: its events
        say what came of it."""
        self.notify("submitting pinned clips now…", timeout=2)
        self.session.chain.settle_now()

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
    """Runs the app over a device session; on quit the open clip is sealed and queued clips are labeled."""
    from tui.widgets import graphics_preview

    graphics = graphics_preview()
    session = DeviceSession(config, key, validator_key=validator_key, chain_every_s=CHAIN_EVERY_S)
    app = KnackApp(session, demo=demo, graphics=graphics)  # it becomes the session's listener
    root = logging.getLogger()
    # The terminal belongs to the app: log lines go to the Log screen instead of stderr.
    saved = root.handlers[:]
    root.handlers = [h for h in saved if not isinstance(h, logging.StreamHandler) or isinstance(h, logging.FileHandler)]
    try:
        session.start(record=False)
        app.run()
    finally:
        root.handlers = saved
        waiting = session.labels.pending if session.labels is not None else 0
        print(f"sealing the open clip{f' and labeling {waiting} queued clip(s)' if waiting else ''}…", flush=True)
        session.close()
    counts = session.outbox.counts()
    print("outbox: " + "  ".join(f"{state} {n}" for state, n in counts.items() if n) + "   (knack clips, knack status)")
    return 0

"""Record: the task being done, a card per source, the live camera preview, sensor sparklines, the clip timer
and free disk."""

from __future__ import annotations

import shutil
import time

from rich.markup import escape
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, Static

from collector.bundle import MAX_TASK_CHARS
from tui import messages as msg
from tui.widgets import Plots, Preview, SourceCard

# Frame rates, sample counts, sparklines and previews are read from the capture threads' counters and latest
# items: they change continuously and no event reports them, so they are read on a timer. What an event or a
# key changes (the clip, marks, the outbox, the chain) is shown from the app's reactive attributes instead.
REFRESH_S = 0.2
HISTORY = 100  # sparkline points: the last 20 s at REFRESH_S
TICK_S = 1.0  # the clip timer's display, only while a clip is open
DISK_EVERY_S = 2.0


def plotted(source) -> list[str]:
    """The channels worth a plot: a sequence counter is a straight ramp; of a joint, its position says enough."""
    skip = getattr(source.config, "seq_field", None)
    channels = [c for c in source.describe().get("channels", []) if c != skip]
    if source.kind == "joints":
        channels = [c for c in channels if c.endswith(".position")]
    return [f"{source.name}.{c}" for c in channels]


class RecordScreen(Screen):
    # The cards have focus, so the keys work; `t` goes to the task field, enter names the task, escape leaves it.
    AUTO_FOCUS = "#cards"
    BINDINGS = [
        Binding("r", "app.start_clip", "Start clip"),
        Binding("s", "app.stop_clip", "Stop clip"),
        Binding("x", "app.split_clip", "Split"),
        Binding("m", "app.mark", "Mark moment"),
        Binding("t", "edit_task", "Task"),
        Binding("escape", "leave_task", "Done", show=False),
    ]

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.errors_seen: dict[str, str] = {}
        self._disk_checked = 0.0
        self._disk_free = 0

    @property
    def session(self):
        return self.app.session

    def compose(self) -> ComposeResult:
        yield Header()
        sources = self.session.recorder.sources
        with Horizontal():
            with VerticalScroll(id="cards"):
                task = Input(self.app.task_text, placeholder="what the hands do, e.g. solder a header onto a PCB", max_length=MAX_TASK_CHARS, id="task")
                task.border_title = "task: t names it, enter sets it"
                yield task
                with Vertical(id="status", classes="card"):
                    yield Static("", id="clip-status")
                    yield Static("", id="capture-status")
                for source in sources:
                    yield SourceCard(source.name, source.kind, id=f"card-{source.name}")
                if not sources:
                    yield Static("No sources configured: add [[camera]] or [[serial]] to knack.toml (see Devices).", classes="card")
            with Vertical(id="live"):
                for source in sources:
                    if source.kind == "camera":
                        yield Preview(source.name, graphics=self.app.graphics, id=f"preview-{source.name}")
                for source in sources:
                    if source.kind != "camera":  # serial sensors and a robot's joint states
                        plots = Plots(plotted(source), HISTORY, id=f"plots-{source.name}", classes="plots")
                        plots.border_title = f"{source.name}: last {HISTORY * REFRESH_S:.0f} s"
                        yield plots
        yield Footer()

    def on_mount(self) -> None:
        self.ticker = self.set_interval(TICK_S, self.show_clip_status, pause=True)
        app = self.app
        for attribute in ("clip_started", "marks", "clips_written", "clip_counts", "chain_problem", "task_text"):
            self.watch(app, attribute, self.show_clip_status, init=False)
        self.watch(app, "task_text", self.show_task, init=False)
        self.watch(app, "clip_started", self.tick_while_recording)
        self.show_clip_status()
        self.update_live()
        self.set_interval(REFRESH_S, self.update_live)

    # --- the task: what the field holds while it has focus is an edit; otherwise it shows the task in force ---
    def action_edit_task(self) -> None:
        self.query_one("#task", Input).focus()

    def action_leave_task(self) -> None:
        self.query_one("#cards").focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.post_message(msg.TaskRequested(event.value))
        self.action_leave_task()

    def on_input_blurred(self, event: Input.Blurred) -> None:
        self.show_task()  # an edit left with escape is dropped; a task refused is said by the app

    def show_task(self) -> None:
        field = self.query_one("#task", Input)
        if not field.has_focus:
            field.value = self.app.task_text

    def tick_while_recording(self, started: float | None) -> None:
        if started is None:
            self.ticker.pause()
        else:
            self.ticker.reset()
            self.ticker.resume()

    def show_clip_status(self) -> None:
        self.query_one("#clip-status", Static).update(self.clip_text())

    def clip_text(self) -> str:
        app = self.app
        if app.clip_started is not None:
            elapsed = int(time.monotonic() - app.clip_started)
            timer = f"[b red]● REC[/] {elapsed // 60:02d}:{elapsed % 60:02d}"
        else:
            timer = "[dim]○ idle[/] (r starts a clip)"
        # A clip that could not be written is also an error in the log: counted here when the status is next drawn.
        lines = [timer, f"task      {escape(app.task_text) if app.task_text else '[dim]none named (t)[/]'}"]
        lines.append(f"clips     {app.clips_written} written, {self.session.recorder.totals.failed} failed   marks {app.marks}")
        lines.append("outbox    " + (", ".join(f"{n} {state}" for state, n in app.clip_counts.items()) or "empty"))
        if app.chain_problem:
            lines.append(f"[b red]chain[/]     {app.chain_problem}")
        return "\n".join(lines)

    def update_live(self) -> None:
        """Reads counters and the latest item of each source: memory only, never waits on capture."""
        recorder = self.session.recorder
        for source in recorder.sources:
            stats, info = source.stats, source.describe()
            latest = recorder.latest(source.name)
            last_values = ""
            if source.kind != "camera" and latest is not None:
                channels = info.get("channels", [])
                last_values = "  ".join(f"{c}={v:.3g}" for c, v in zip(channels, latest.values, strict=False))
                plots = self.query_one(f"#plots-{source.name}", Plots)
                if not plots.channels:
                    plots.learn(plotted(source))
                for channel, value in zip(channels, latest.values, strict=False):
                    if f"{source.name}.{channel}" in plots.values:
                        plots.push(f"{source.name}.{channel}", value)
                plots.refresh()
            if source.kind == "camera" and latest is not None:
                self.query_one(f"#preview-{source.name}", Preview).show(latest.image, latest.capture_ns)
            self.query_one(f"#card-{source.name}", SourceCard).update_from(stats, info, last_values)
            if stats.last_error and self.errors_seen.get(source.name) != stats.last_error:
                self.app.notify(f"{source.kind} {source.name}: {stats.last_error}", severity="error", timeout=6)
            self.errors_seen[source.name] = stats.last_error
        self.query_one("#capture-status", Static).update(self.capture_text())

    def capture_text(self) -> str:
        now = time.monotonic()
        if now - self._disk_checked > DISK_EVERY_S:
            path = self.session.config.data_path
            probe = path if path.exists() else next((p for p in path.parents if p.exists()), path)
            self._disk_free = shutil.disk_usage(probe).free
            self._disk_checked = now
        totals = self.session.recorder.totals
        captured = f"captured  {totals.frames} frames, {totals.samples} samples"
        return f"{captured}\ndisk      {self._disk_free / 2**30:.1f} GiB free in {self.session.config.data_path}"

"""Clips: every clip in the outbox with its state, and one clip's manifest, CID, transaction and reward
(the rows and detail of `knack clips`). Read again whenever the session says a clip moved, and when shown;
retry, re-label and discard are asked of the app as messages."""

from __future__ import annotations

import os
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, DataTable, Footer, Header, Label, Select, Static
from textual.worker import get_current_worker

from knack.clips import ClipView, clip_views, describe
from storage.outbox.states import DISCARDABLE, STATES
from tui import messages as msg

COLUMNS = ("clip", "state", "duration", "quality", "hands", "reward", "reason")
STATE_STYLE = {"rejected": "red", "accepted": "green", "pinned": "cyan", "submitted": "blue", "settled": "bold green"}


class ConfirmDiscard(ModalScreen[bool]):
    """Discarding deletes a recording: the operator says so twice."""

    BINDINGS = [Binding("y", "answer(True)", "Discard"), Binding("n,escape", "answer(False)", "Keep")]

    def __init__(self, clip_id: str):
        super().__init__()
        self.clip_id = clip_id

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm"):
            yield Label(f"Discard clip {self.clip_id}?\nIts files are deleted; this cannot be undone.")
            with Horizontal():
                yield Button("Discard (y)", variant="error", id="yes")
                yield Button("Keep (n)", id="no")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


class ClipsScreen(Screen):
    AUTO_FOCUS = "#clips"  # arrows move through clips at once; the state filter is one tab away (or f)
    BINDINGS = [
        Binding("t", "retry", "Retry upload"),
        Binding("l", "relabel", "Re-label"),
        Binding("d", "discard", "Discard"),
        Binding("f", "next_filter", "Filter"),
        Binding("v", "review", "Rerun"),  # "Review in Rerun" would push Help and Quit off a 160-column footer
    ]

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.views: dict[str, ClipView] = {}
        self.state_filter: str | None = None
        self._shown: list[tuple] = []

    def compose(self) -> ComposeResult:
        yield Header()
        yield Select([(state, state) for state in STATES], prompt="every state", id="filter", allow_blank=True)
        with Horizontal():
            table = DataTable(id="clips", cursor_type="row", zebra_stripes=True)
            table.add_columns(*COLUMNS)
            yield table
            with VerticalScroll(id="detail-pane"):
                yield Static("No clips yet: record one on the Record screen (1, then r).", id="detail")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#detail-pane").border_title = "clip"

    def on_screen_resume(self) -> None:
        """Shown (first or again): whatever moved while another screen was in view is read now."""
        self.action_refresh()

    # A clip moved from one outbox state to the next (the app hands these on while this screen is in view).
    @on(msg.ClipWritten)
    @on(msg.ClipLabeled)
    @on(msg.ClipPinned)
    @on(msg.BatchSubmitted)
    @on(msg.ClipsSettled)
    @on(msg.ClipDiscarded)
    def clip_moved(self) -> None:
        self.action_refresh()

    @work(thread=True, exclusive=True, group="clips")
    def action_refresh(self) -> None:
        """Reads the outbox and the manifests in a thread: a slow disk never stalls the screen."""
        worker = get_current_worker()
        views = clip_views(self.app.session.outbox)
        # A refresh asked for since (a newer event) read later: this one's rows would be older than those.
        self.app.call_from_thread(lambda: worker.is_cancelled or self.show_rows(views))

    def show_rows(self, views: list[ClipView]) -> None:
        self.views = {v.clip_id: v for v in views}
        shown = [v for v in views if self.state_filter in (None, v.state)]
        rows = [self.cells(v) for v in shown]
        table = self.query_one("#clips", DataTable)
        if rows != self._shown:  # rebuilding an unchanged table would only move the cursor about
            selected = self.selected_clip()
            table.clear()
            for v, cells in zip(shown, rows, strict=True):
                table.add_row(*cells, key=v.clip_id)
            if selected is not None and selected in {v.clip_id for v in shown}:
                table.move_cursor(row=table.get_row_index(selected), animate=False)
            self._shown = rows
        self.show_detail(self.selected_clip())

    @staticmethod
    def cells(v: ClipView) -> tuple:
        return (
            v.clip_id,
            Text(v.state, style=STATE_STYLE.get(v.state, "")),
            f"{v.duration_s:.1f} s" if v.duration_s is not None else "",
            f"{v.quality:.2f}" if v.quality is not None else "",
            v.hands.removeprefix("hands in "),
            f"+{v.reward_tokens}" if v.reward_tokens else "",
            (v.reason or "")[:70],
        )

    def selected_clip(self) -> str | None:
        table = self.query_one("#clips", DataTable)
        if not table.row_count:
            return None
        try:
            return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        except Exception:  # noqa: BLE001 - the cursor is outside the (just cleared) table
            return None

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.show_detail(event.row_key.value if event.row_key else None)

    def show_detail(self, clip_id: str | None) -> None:
        detail = self.query_one("#detail", Static)
        view = self.views.get(clip_id) if clip_id else None
        if view is None:
            detail.update("No clips yet: record one on the Record screen (1, then r)." if not self.views else "Select a clip to see it in full.")
            return
        detail.update(Text("\n".join(describe(view))))

    def on_select_changed(self, event: Select.Changed) -> None:
        self.state_filter = None if event.value is Select.BLANK else str(event.value)
        self.show_rows(list(self.views.values()))

    def action_next_filter(self) -> None:
        order = [None, *STATES]
        self.state_filter = order[(order.index(self.state_filter) + 1) % len(order)]
        select = self.query_one("#filter", Select)
        with select.prevent(Select.Changed):
            if self.state_filter is None:
                select.clear()
            else:
                select.value = self.state_filter
        self.show_rows(list(self.views.values()))
        self.notify(f"showing {self.state_filter or 'every'} clip(s)", timeout=2)

    def action_retry(self) -> None:
        clip_id = self.selected_clip()
        self.post_message(msg.RetryRequested([clip_id] if clip_id else None))

    def action_relabel(self) -> None:
        clip_id = self.selected_clip()
        if clip_id is None:
            self.app.notify("no clip selected", severity="warning")
            return
        self.post_message(msg.RelabelRequested(Path(self.views[clip_id].path)))

    def action_review(self) -> None:
        clip_id = self.selected_clip()
        if clip_id is None:
            self.app.notify("no clip selected", severity="warning")
            return
        self.notify(f"writing a Rerun review of {clip_id}…", timeout=3)
        self.review_clip(Path(self.views[clip_id].path))

    @work(thread=True, group="review")
    def review_clip(self, clip: Path) -> None:
        """knack.review reads the clip, runs the labeler's detectors and writes the .rrd: seconds, so in a thread."""
        from knack.review import ReviewError, review_in_data_dir

        try:
            line, severity = review_in_data_dir(clip, self.app.session.config, os.environ), "information"
        except ReviewError as exc:
            line, severity = str(exc), "error"
        except Exception as exc:  # noqa: BLE001 - a failed review is said; it must never end the app (and capture)
            line, severity = f"no review of {clip.name}: {exc}", "error"
        self.app.call_from_thread(self.notify, line, severity=severity, timeout=10)

    def action_discard(self) -> None:
        clip_id = self.selected_clip()
        if clip_id is None:
            self.app.notify("no clip selected", severity="warning")
            return
        if self.views[clip_id].state not in DISCARDABLE:
            self.app.notify(f"clip {clip_id} is {self.views[clip_id].state}: shared already, so it is kept", severity="warning")
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.post_message(msg.DiscardRequested(clip_id))

        self.app.push_screen(ConfirmDiscard(clip_id), answered)

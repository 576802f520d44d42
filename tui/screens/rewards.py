"""Rewards: any contributor's balance, accepted/pending/rejected clips with reasons, and reward events; read
again when the session reads settlements back, when the screen is shown, and on g."""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Static
from textual.worker import get_current_worker

from tui import messages as msg


class RewardsScreen(Screen):
    # The table has focus, so the app's keys work; `a` goes to the address field, enter reads it, escape leaves.
    AUTO_FOCUS = "#events"
    BINDINGS = [
        Binding("a", "edit_address", "Address"),
        Binding("g", "refresh", "Refresh"),
        Binding("escape", "leave_address", "Done", show=False),
    ]

    def action_edit_address(self) -> None:
        self.query_one("#address", Input).focus()

    def action_leave_address(self) -> None:
        self.query_one("#events", DataTable).focus()

    def compose(self) -> ComposeResult:
        yield Header()
        yield Input(self.app.session.contributor, placeholder="contributor address 0x…", id="address")
        yield Static("reading the chain…", id="summary", classes="card")
        table = DataTable(id="events", cursor_type="row", zebra_stripes=True)
        table.add_columns("block", "batch", "accepted", "rejected", "reward (KNACK)", "tx")
        yield table
        yield Footer()

    def on_screen_resume(self) -> None:
        self.action_refresh()

    @on(msg.ClipsSettled)
    def settled(self) -> None:
        self.action_refresh()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.action_refresh()
        self.action_leave_address()

    def action_refresh(self) -> None:
        self.load(self.query_one("#address", Input).value.strip())

    @work(thread=True, exclusive=True, group="rewards")
    def load(self, address: str) -> None:
        worker = get_current_worker()
        try:
            view = self.app.session.rewards(address)
        except Exception as exc:  # a bad address or an unreachable chain: said in the card
            error = f"{address}: {exc}"
            self.app.call_from_thread(lambda: worker.is_cancelled or self.show_error(error))
            return
        # A read asked for since (another address, a newer settlement) is the one to show.
        self.app.call_from_thread(lambda: worker.is_cancelled or self.show_view(view))

    def show_error(self, message: str) -> None:
        self.query_one("#summary", Static).update(f"cannot read rewards: {message}")

    def show_view(self, view: dict | None) -> None:
        summary = self.query_one("#summary", Static)
        table = self.query_one("#events", DataTable)
        if view is None:
            summary.update("No registry deployed on this chain yet (`knack chain deploy`, or run a demo session).")
            table.clear()
            return
        reasons = "".join(f"\n            {n} x {why}" for why, n in view["rejected_reasons"].items())
        summary.update(
            f"contributor {view['address']}\n"
            f"balance     {view['balance_tokens']} KNACK\n"
            f"clips       {view['accepted']} accepted, {view['pending']} pending, {view['rejected']} rejected{reasons}"
        )
        self.view = view
        table.clear()
        for e in reversed(view["events"][-50:]):
            table.add_row(str(e["block"]), str(e["batch"]), str(e["accepted"]), str(e["rejected"]), f"+{e['reward_tokens']}", e["tx"])

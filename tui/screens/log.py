"""Log: every message of the collector and storage loggers, and what the app did, newest last."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer, Header, RichLog


class LogScreen(Screen):
    def compose(self) -> ComposeResult:
        yield Header()
        yield RichLog(id="log", wrap=True, markup=False, max_lines=5000)
        yield Footer()

    def on_mount(self) -> None:
        log = self.query_one(RichLog)
        for line in self.app.log_lines:
            log.write(line)

    def append(self, line: str) -> None:
        self.query_one(RichLog).write(line)

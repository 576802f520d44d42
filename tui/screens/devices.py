"""Devices & settings: cameras and serial ports as `knack devices` finds them, the effective config, and
which real parts (models and execution provider, IPFS, chain) `knack doctor` can reach."""

from __future__ import annotations

import dataclasses

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, Static


class DevicesScreen(Screen):
    BINDINGS = [Binding("g", "refresh", "Check again")]

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll():
            yield Static("looking for devices…", id="devices", classes="card")
            yield Static("checking the real parts…", id="checks", classes="card")
            yield Static("", id="config", classes="card")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#devices").border_title = "devices (knack devices)"
        self.query_one("#checks").border_title = "real parts (knack doctor)"
        self.query_one("#config").border_title = "effective configuration"
        self.action_refresh()

    @work(thread=True, exclusive=True, group="devices")
    def action_refresh(self) -> None:
        from collector.config import to_toml
        from collector.devices import format_devices, list_cameras, list_serial_ports
        from knack.doctor import run_checks

        config = self.app.session.config
        devices = format_devices(list_cameras(), list_serial_ports())
        self.app.call_from_thread(self.query_one("#devices", Static).update, Text(devices))
        self.app.call_from_thread(self.query_one("#config", Static).update, Text(f"# {config.source}\n" + to_toml(config)))
        # The recorder holds the configured sources: opening them again would take frames and bytes from it,
        # so their live state is on the Record screen and only the other parts are checked here.
        checks = run_checks(dataclasses.replace(config, camera=(), serial=()))
        lines = [f"{c.status:<5} {c.part:<22} {c.detail}" for c in checks if c.part not in ("cameras", "serial ports")]
        lines += [f"live  {s.kind} {s.name:<15} {s.stats.state} (see Record)" for s in self.app.session.recorder.sources]
        self.app.call_from_thread(self.query_one("#checks", Static).update, Text("\n".join(lines)))

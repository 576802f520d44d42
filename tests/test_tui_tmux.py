"""`knack tui --demo` in a real terminal: tmux runs it, keys go in with send-keys, the screen comes back
with capture-pane. What a new user does first: see the footer, open help, record a clip, find it on the
Clips screen, quit."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (apt install tmux)")


class Terminal:
    def __init__(self, socket: str, conf: str):
        self.socket, self.conf = socket, conf

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, "-f", self.conf, *args], check=True, capture_output=True, text=True, timeout=20).stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "tui")

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "tui", *keys)

    def wait_for(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.3)
        raise AssertionError(f"{text!r} did not appear within {timeout:g} s; the screen:\n{self.screen()}")

    def wait_gone(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text in self.screen():
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} still there after {timeout:g} s; the screen:\n{self.screen()}")
            time.sleep(0.3)


@pytest.fixture
def terminal(tmp_path):
    socket = f"knack-test-{os.getpid()}"
    # With no client attached, tmux would shrink the window to its default 80x24 once the session exists.
    conf = tmp_path / "tmux.conf"
    conf.write_text("set -g default-size 150x45\n")
    term = Terminal(socket, str(conf))
    yield term
    subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True)


def test_knack_tui_demo_in_a_real_terminal(terminal, tmp_path):
    env = {
        "HOME": str(tmp_path),
        "XDG_DATA_HOME": str(tmp_path / "share"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "KNACK_DEVICE_PASSWORD": "correct horse",
        "KNACK_VALIDATOR_PASSWORD": "battery staple",
    }
    command = " ".join(
        [
            "env",
            "-u",
            "COLUMNS",
            "-u",
            "LINES",  # else the app would keep the size they say, not the terminal's
            *(f"{k}={shlex.quote(v)}" for k, v in env.items()),
            shlex.quote(sys.executable),
            "-m",
            "knack",
            "tui",
            "--demo",
            "--clip-seconds",
            "0",
        ]
    )
    # The pane outlives the app, so what it prints on the way out can be read.
    terminal.tmux("new-session", "-d", "-s", "tui", "-x", "150", "-y", "45", "-c", str(tmp_path), f"{command}; echo KNACK-EXIT $?; sleep 120")

    terminal.wait_for("Start clip", 90)
    # The app follows the terminal's size (SIGWINCH): a resized window is drawn anew at the new size.
    terminal.tmux("resize-window", "-t", "tui", "-x", "140", "-y", "42")
    # Drawn anew once the app has handled SIGWINCH: until then the pane may hold half of the old picture.
    for text in ("? Help", "camera bench", "serial glove", "preview bench"):
        terminal.wait_for(text, 10)

    terminal.keys("?")
    terminal.wait_for("Knack — keys", 10)
    terminal.keys("Escape")
    terminal.wait_gone("Knack — keys", 10)

    terminal.keys("r")
    terminal.wait_for("● REC", 10)
    time.sleep(2.0)
    terminal.keys("s")
    terminal.keys("2")
    terminal.wait_for("every state", 10)
    # The clip's row: its id (a UUIDv7, starting with the time) and a state. "01" alone also matches other
    # text on the screen, so wait for a row, however long the clip takes to seal on a loaded host.
    row = re.compile(r"01[0-9a-f]{6}-[0-9a-f]{4}.*\b(recorded|labeled|accepted|rejected|pinned|submitted|settled)\b")
    deadline = time.monotonic() + 30
    while not row.search(screen := terminal.screen()):
        assert time.monotonic() < deadline, f"no clip row after 30 s; the screen:\n{screen}"
        time.sleep(0.3)

    terminal.keys("q")
    screen = terminal.wait_for("KNACK-EXIT", 60)
    assert "KNACK-EXIT 0" in screen and "outbox:" in screen

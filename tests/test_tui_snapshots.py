"""Snapshots of every screen of `knack tui` at 140x40 (pytest-textual-snapshot; SVGs in __snapshots__/).

What a screen shows must not depend on the machine or the moment: the session is not started (no
frames, counters at zero), paths are relative to the test's directory, the key is fixed, and the
Devices screen gets fixed device and doctor results. The pilot tests (test_tui.py) drive the live parts.
After a deliberate change of a screen: `pytest tests/test_tui_snapshots.py --snapshot-update`, and look
at the new SVGs before committing them."""

from __future__ import annotations

import json
import shutil
from collections import namedtuple
from pathlib import Path

import pytest
import textual

from collector.config import from_mapping
from collector.identity import from_environment
from collector.simulator import IMU_FIELDS
from knack.doctor import Check
from knack.session import DeviceSession
from tui.app import KnackApp

SIZE = (140, 40)
RECORDED_WITH = "8.2.8"  # Textual's rendering changes between releases: the SVGs are for this one
pytestmark = pytest.mark.skipif(
    textual.__version__ != RECORDED_WITH, reason=f"snapshots were taken with Textual {RECORDED_WITH}, this is {textual.__version__} (the [test] extra pins it)"
)
# A well-known test key (never holds value): the header shows its address.
TEST_KEY = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"


def manifest(duration: float, score: float | None, hands: float | None, decision: dict | None) -> dict:
    return {
        "clip_id": "",
        "duration_s": duration,
        "quality": {"score": score} if score is not None else {},
        "labels": {"hands": {"hand_fraction": hands}} if hands is not None else {},
        "decision": decision,
    }


@pytest.fixture
def app(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KNACK_TEST_KEY", TEST_KEY)
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(2**40, 2**39, 100 * 2**30))
    monkeypatch.setattr("collector.devices.list_cameras", lambda: [])
    monkeypatch.setattr("collector.devices.list_serial_ports", lambda: [])
    monkeypatch.setattr(
        "knack.doctor.run_checks",
        lambda config: [
            Check("models", "ok", "palm, landmarks, face: CPUExecutionProvider"),
            Check("content store", "ok", "embedded block store in data/blocks.sqlite"),
            Check("chain", "ok", "embedded chain in data/chain"),
        ],
    )
    config = from_mapping(
        {
            "data_dir": "data",
            "recorder": {"task": "solder a header onto a PCB"},
            "camera": [{"name": "bench", "source": "camera.mp4", "fps": 30.0}],
            "serial": [
                {
                    "name": "glove",
                    "port": "/dev/ttyKNACK0",
                    "protocol": "csv",
                    "csv_columns": list(IMU_FIELDS),
                    "seq_field": "seq",
                    "device_time_field": "t_us",
                    "nominal_rate": 200.0,
                }
            ],
        }
    ).validate()
    session = DeviceSession(config, from_environment("KNACK_TEST_KEY"))
    outbox = session.outbox
    clips = [
        (
            "01a20000-0000-7000-8000-000000000001",
            manifest(5.0, 0.81, 0.9, {"accepted": True, "status": "accepted", "summary": "accepted: every check passed"}),
            "accepted",
        ),
        (
            "01a20000-0000-7000-8000-000000000002",
            manifest(
                5.0, 0.41, 0.2, {"accepted": False, "status": "rejected", "summary": "rejected: no hands in 80% of frames (at least 50% must show hands)"}
            ),
            "rejected",
        ),
        ("01a20000-0000-7000-8000-000000000003", manifest(2.1, None, None, None), "recorded"),
    ]
    for clip_id, content, state in clips:
        path = Path("data/clips") / clip_id
        path.mkdir(parents=True)
        (path / "manifest.json").write_text(json.dumps(dict(content, clip_id=clip_id)))
        outbox.record(clip_id, path)
        if state != "recorded":
            outbox.decide(clip_id, state == "accepted", content["decision"]["summary"] if state == "rejected" else "")
    yield KnackApp(session)
    session.close()


async def settle(pilot) -> None:
    await pilot.pause(0.5)
    await pilot.wait_for_scheduled_animations()


def test_record_screen(app, snap_compare):
    assert snap_compare(app, terminal_size=SIZE, run_before=settle)


def test_clips_screen(app, snap_compare):
    async def open_clips(pilot):
        await pilot.press("2")
        await settle(pilot)
        await pilot.press("down")
        await settle(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=open_clips)


def test_rewards_screen(app, snap_compare):
    async def open_rewards(pilot):
        await pilot.press("3")
        for _ in range(100):  # the embedded chain opens in a worker
            await pilot.pause(0.1)
            if "reading the chain" not in str(pilot.app.screen.query_one("#summary").render()):
                break
        await settle(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=open_rewards)


def test_devices_screen(app, snap_compare):
    async def open_devices(pilot):
        await pilot.press("4")
        for _ in range(50):
            await pilot.pause(0.1)
            if "models" in str(pilot.app.screen.query_one("#checks").render()):
                break
        await settle(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=open_devices)


def test_help_screen(app, snap_compare):
    assert snap_compare(app, press=["question_mark"], terminal_size=SIZE, run_before=settle)


def test_log_screen(app, snap_compare):
    assert snap_compare(app, press=["5"], terminal_size=SIZE, run_before=settle)

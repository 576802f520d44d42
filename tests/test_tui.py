"""`knack tui` driven through Textual's pilot with real parts: the sample video as camera, the sensor
simulator on a pty, the shipped models, the embedded block store and the embedded chain. The last tests
post the session's typed events from a thread of their own, as its stages do, to pin down how the app
hears them: as messages, with no timer reading the outbox or the chain."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
import time
import typing
from pathlib import Path

import pytest

from collector.config import from_mapping
from collector.identity import load_or_create
from collector.labeling.labeler import Labeled
from collector.sample import SAMPLE_IMU, SAMPLE_VIDEO
from collector.simulator import IMU_FIELDS
from knack import events as ev
from knack.session import DeviceSession
from tui import messages as msg
from tui.app import CHAIN_EVERY_S, KnackApp

SIZE = (160, 48)


@pytest.fixture(scope="module")
def validator_key(tmp_path_factory):
    key, _ = load_or_create(tmp_path_factory.mktemp("validator") / "validator-key.json", "v", kdf="pbkdf2", iterations=1000)
    return key


def glove(port: str) -> dict:
    return {
        "name": "glove",
        "port": port,
        "protocol": "csv",
        "csv_columns": list(IMU_FIELDS),
        "seq_field": "seq",
        "device_time_field": "t_us",
        "nominal_rate": 200.0,
    }


@pytest.fixture
def bench_config(tmp_path, simulator):
    """The demo's bench: the sample video (looping) and the sample glove log on a pty."""

    def make(camera_source: str = str(SAMPLE_VIDEO), **sim) -> object:
        port = simulator(rate=200.0, protocol="csv", replay=str(SAMPLE_IMU), **sim).port
        return from_mapping(
            {
                "data_dir": str(tmp_path / "data"),
                "recorder": {"clip_seconds": 0},
                # The flow is under test here, not the policy (tests/test_label_policy.py): a clip recorded at any
                # moment of the sample must be able to go all the way to a reward.
                "policy": {
                    "min_hand_fraction": 0.0,
                    "max_edge_blur_px": 50.0,
                    "max_face_area": 1.0,
                    "max_frame_drop_fraction": 0.5,
                    "max_sample_loss_fraction": 0.5,
                },
                "camera": [{"name": "bench", "source": camera_source, "fps": 30.0, "loop": True}],
                "serial": [glove(port)],
            }
        ).validate()

    return make


async def until(pilot, predicate, timeout: float, what: str) -> None:
    """Lets the app run (its timers, workers and the capture threads) until `predicate` holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            log = "\n".join(list(pilot.app.log_lines)[-15:])
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; the app's log ends:\n{log}")
        await pilot.pause(0.2)


def tui_session(config, key, validator_key=None) -> DeviceSession:
    """The session as `knack tui` makes it."""
    return DeviceSession(config, key, validator_key=validator_key, chain_every_s=CHAIN_EVERY_S)


def run_app(session: DeviceSession, scenario, demo: bool = False, app: KnackApp | None = None) -> KnackApp:
    app = app or KnackApp(session, demo=demo)

    async def drive() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await scenario(app, pilot)

    session.start(record=False)
    try:
        asyncio.run(drive())
    finally:
        session.close()
    return app


def notices(app) -> list[str]:
    return [n.message for n in app._notifications]


def test_record_a_clip_and_watch_it_settle_and_the_balance_rise(bench_config, device_key, validator_key):
    """The acceptance path: r, s on Record; the clip goes recorded -> accepted -> pinned -> submitted ->
    settled on Clips; the balance rises on Rewards. All from keys shown in the footer."""
    session = tui_session(bench_config(), device_key, validator_key=validator_key)
    seen_states: list[str] = []

    async def scenario(app, pilot):
        screen = app.screen
        assert type(screen).__name__ == "RecordScreen"
        await until(pilot, lambda: screen.query_one("#preview-bench").shown_ns > 0, 10, "a camera frame in the preview")
        await until(pilot, lambda: len(screen.query_one("#plots-glove").values["glove.ax"]) > 3, 10, "glove samples in the plots")
        card = str(screen.query_one("#card-glove").render())
        assert "recording" in card and "ax=" in card
        assert "○ idle" in str(screen.query_one("#clip-status").render())

        await pilot.press("r")
        await pilot.pause(0.3)
        assert "● REC" in str(screen.query_one("#clip-status").render())
        await pilot.pause(2.2)
        await pilot.press("s")

        await pilot.press("2")
        clips = app.screen
        assert type(clips).__name__ == "ClipsScreen"

        def state():
            views = list(clips.views.values())
            if views and (not seen_states or seen_states[-1] != views[0].state):
                seen_states.append(views[0].state)
            return views[0].state if views else None

        await until(pilot, lambda: state() == "settled", 120, "the clip to be settled on chain")
        view = next(iter(clips.views.values()))
        assert view.reward_tokens and float(view.reward_tokens) > 0
        detail = str(clips.query_one("#detail").render())
        assert f"cid       {view.cid}" in detail and view.tx_hash in detail and f"reward    {view.reward_tokens} KNACK" in detail
        table = clips.query_one("#clips")
        assert table.row_count == 1 and "settled" in str(table.get_row_at(0)[1])

        await pilot.press("3")
        rewards = app.screen
        await until(pilot, lambda: "balance" in str(rewards.query_one("#summary").render()), 30, "the rewards summary")
        await pilot.press("g")
        await until(pilot, lambda: "0.0000 KNACK" not in str(rewards.query_one("#summary").render()), 30, "a balance above zero")
        summary = str(rewards.query_one("#summary").render())
        assert f"contributor {device_key.address}" in summary and "1 accepted, 0 pending, 0 rejected" in summary
        assert rewards.query_one("#events").row_count == 1

    run_app(session, scenario, demo=True)
    assert seen_states[-1] == "settled"
    assert len(session.written) == 1 and session.outbox.counts()["settled"] == 1


def test_rewards_for_any_address_and_a_clear_error_for_a_bad_one(bench_config, device_key, validator_key):
    """A contributor types an address: it is read from the chain; a malformed one is said in the card."""
    session = tui_session(bench_config(), device_key, validator_key=validator_key)
    stranger = "0x" + "ab" * 20

    async def scenario(app, pilot):
        await pilot.press("3")
        rewards = app.screen
        await until(pilot, lambda: "balance" in str(rewards.query_one("#summary").render()), 60, "the chain to be read")
        field = rewards.query_one("#address")
        await pilot.press("a")
        assert field.has_focus
        field.value = stranger  # typed at once: the pilot waits for the app to go idle after every key
        await pilot.press("enter")
        await until(pilot, lambda: stranger in str(rewards.query_one("#summary").render()).lower(), 20, "the stranger's rewards")
        assert "balance     0.0000 KNACK" in str(rewards.query_one("#summary").render())
        assert not field.has_focus
        await pilot.press("a")
        field.value = "0x1234"
        await pilot.press("enter")
        await until(pilot, lambda: "cannot read rewards" in str(rewards.query_one("#summary").render()), 20, "the error")
        assert "0x1234" in str(rewards.query_one("#summary").render())

    run_app(session, scenario, demo=True)


def test_an_unplugged_camera_is_reported_and_the_glove_keeps_recording(bench_config, device_key, tmp_path):
    """A camera that is not there: one-line notification, the card turns red, serial samples keep coming."""
    session = tui_session(bench_config(camera_source="/dev/video97"), device_key)

    async def scenario(app, pilot):
        screen = app.screen
        card = screen.query_one("#card-bench")
        await until(pilot, lambda: card.has_class("failing"), 15, "the camera card to show the failure")
        assert "error" in str(card.render())
        await until(pilot, lambda: any("camera bench" in n for n in notices(app)), 5, "a notification")
        before = session.recorder.sources[1].stats.received
        await pilot.pause(1.0)
        assert session.recorder.sources[1].stats.received > before + 100
        assert not screen.query_one("#card-glove").has_class("failing")

    run_app(session, scenario)


def test_serial_garbage_is_counted_on_the_card(bench_config, device_key):
    session = tui_session(bench_config(garbage=0.05), device_key)

    async def scenario(app, pilot):
        card = app.screen.query_one("#card-glove")
        await until(pilot, lambda: "errors    0" not in str(card.render()) and "errors" in str(card.render()), 15, "parse errors on the card")

    run_app(session, scenario)


def test_discard_from_the_clips_screen_asks_first(bench_config, device_key):
    """d asks; n keeps the clip, d then y deletes its files and its outbox row."""
    config = bench_config()
    config = dataclasses.replace(config, labeler=dataclasses.replace(config.labeler, label_on_record=False))
    session = tui_session(config, device_key)

    async def scenario(app, pilot):
        await pilot.press("r")
        await pilot.pause(1.0)
        await pilot.press("s")
        await until(pilot, lambda: len(session.written) == 1, 20, "the clip to be sealed")
        clip = session.written[0]
        await pilot.press("2")
        clips = app.screen
        await until(pilot, lambda: clips.query_one("#clips").row_count == 1, 10, "the clip in the table")
        await pilot.press("d")
        assert type(app.screen).__name__ == "ConfirmDiscard"
        await pilot.press("n")
        assert clip.path.exists()
        await pilot.press("d")
        await pilot.press("y")
        await until(pilot, lambda: clips.query_one("#clips").row_count == 0, 10, "the row to go")
        assert not clip.path.exists() and session.outbox.get(clip.clip_id) is None
        assert f"discarded {clip.clip_id}" in app.log_lines

    run_app(session, scenario)


def test_devices_help_palette_and_log(bench_config, device_key):
    """The other screens: devices and the real parts, the help screen, the command palette, the log."""
    session = tui_session(bench_config(), device_key)

    async def scenario(app, pilot):
        await pilot.press("4")
        devices = app.screen
        await until(pilot, lambda: "CPUExecutionProvider" in str(devices.query_one("#checks").render()), 60, "the doctor's checks")
        checks = str(devices.query_one("#checks").render())
        assert "embedded" in checks and "live  camera bench" in checks
        assert "[[camera]]" in str(devices.query_one("#config").render())

        await pilot.press("question_mark")
        assert type(app.screen).__name__ == "HelpScreen"
        await pilot.press("escape")
        assert type(app.screen).__name__ == "DevicesScreen"

        await pilot.press("ctrl+p")
        await pilot.pause(0.3)
        await pilot.press(*"mark")  # few keys: the pilot waits for the app to go idle after each one
        await pilot.pause(0.5)
        await pilot.press("enter")
        await until(pilot, lambda: app.marks == 1, 5, "the palette's Mark moment")

        await pilot.press("5")
        log = app.screen.query_one("#log")
        await until(pilot, lambda: any("moment marked" in str(line.text) for line in log.lines), 5, "the log line")
        assert any("session started" in str(line.text) for line in log.lines)

    run_app(session, scenario)


def manifests_of(session: DeviceSession) -> list[dict]:
    return [json.loads((c.path / "manifest.json").read_text()) for c in sorted(session.written, key=lambda c: c.clip_id)]


def test_a_task_named_on_the_record_screen_while_recording_splits_the_clip(bench_config, device_key):
    config = bench_config()
    config = dataclasses.replace(config, recorder=dataclasses.replace(config.recorder, task="open the hand"))
    session = DeviceSession(config, device_key, label=False, chain_every_s=CHAIN_EVERY_S)

    async def scenario(app, pilot):
        screen = app.screen
        await until(pilot, lambda: screen.query_one("#preview-bench").shown_ns > 0, 20, "a camera frame in the preview")
        await pilot.press("r")
        await pilot.pause(1.0)
        await pilot.press("t", "ctrl+a", "ctrl+k", *"pinch the fingers", "enter")
        await until(pilot, lambda: "task      pinch the fingers" in str(screen.query_one("#clip-status").render()), 3, "the task on the status")
        await pilot.pause(1.0)
        await pilot.press("s")
        await until(pilot, lambda: len(session.written) == 2, 20, "both clips sealed")

    run_app(session, scenario)
    assert [m["task"] for m in manifests_of(session)] == ["open the hand", "pinch the fingers"]


# --- the session's events as messages ---------------------------------------------------------------------
@pytest.fixture
def quiet_session(tmp_path, device_key):
    """A session with no sources, not started: nothing happens in it but what a test does."""
    config = from_mapping({"data_dir": str(tmp_path / "data")}).validate()
    session = DeviceSession(config, device_key, label=False, chain_every_s=CHAIN_EVERY_S)
    yield session
    session.close()


def add_clip(session: DeviceSession, clip_id: str) -> Path:
    path = session.config.clips_path / clip_id
    path.mkdir(parents=True)
    (path / "manifest.json").write_text(json.dumps({"clip_id": clip_id, "duration_s": 2.0}))
    session.outbox.record(clip_id, path)
    return path


def on_a_stage_thread(action) -> None:
    """Runs `action` as the session's stages do: on a thread that is not the app's."""
    thread = threading.Thread(target=action)
    thread.start()
    thread.join()


def drive(app: KnackApp, scenario) -> None:
    async def run() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await scenario(app, pilot)

    asyncio.run(run())


CLIP = "01a20000-0000-7000-8000-000000000001"


def labeled(path: Path, accepted: bool = True) -> Labeled:
    return Labeled(path.name, path, accepted, "accepted: every check passed" if accepted else "rejected: no hands", 0.81, 0, 1.0)


def test_every_session_event_has_a_message_of_its_own():
    kinds = typing.get_args(ev.Event)
    for kind in kinds:
        event = kind(*(f"{kind.__name__}.{field.name}" for field in dataclasses.fields(kind)))
        message = msg.message_for(event)
        assert type(message).__name__ == kind.__name__
        assert all(getattr(message, field.name) == getattr(event, field.name) for field in dataclasses.fields(kind))
    assert len({msg.FOR_EVENT[kind] for kind in kinds}) == len(kinds)


def test_a_clip_labeled_on_a_stage_thread_shows_in_the_log(quiet_session):
    path = add_clip(quiet_session, CLIP)

    async def scenario(app, pilot):
        on_a_stage_thread(lambda: quiet_session.post(ev.ClipLabeled(labeled(path))))
        await until(pilot, lambda: any(line.startswith(f"ACCEPTED {CLIP}  quality 0.81") for line in app.log_lines), 5, "the log line")

    drive(KnackApp(quiet_session), scenario)


def test_a_clip_labeled_on_a_stage_thread_updates_the_clips_table(quiet_session):
    path = add_clip(quiet_session, CLIP)

    async def scenario(app, pilot):
        await pilot.press("2")
        table = app.screen.query_one("#clips")
        await until(pilot, lambda: table.row_count == 1 and str(table.get_row_at(0)[1]) == "recorded", 5, "the recorded clip")

        def label() -> None:
            quiet_session.outbox.decide(CLIP, True)
            quiet_session.post(ev.ClipLabeled(labeled(path)))

        on_a_stage_thread(label)
        await until(pilot, lambda: str(table.get_row_at(0)[1]) == "accepted", 3, "the clip to show as accepted")

    drive(KnackApp(quiet_session), scenario)


def test_the_clips_screen_reads_the_outbox_only_when_told(quiet_session, monkeypatch):
    import tui.screens.clips as clips_screen

    reads = []
    real = clips_screen.clip_views
    monkeypatch.setattr(clips_screen, "clip_views", lambda outbox: reads.append(time.monotonic()) or real(outbox))
    add_clip(quiet_session, CLIP)

    async def scenario(app, pilot):
        await pilot.press("2")
        await until(pilot, lambda: app.screen.query_one("#clips").row_count == 1, 5, "the clip in the table")
        before = len(reads)
        await pilot.pause(2.5)  # the screen used to read every second
        assert len(reads) == before

    drive(KnackApp(quiet_session), scenario)


def test_clips_settled_on_a_stage_thread_refreshes_the_rewards(quiet_session):
    balance = ["0.0000"]

    def rewards(address):
        return {"address": address, "balance_tokens": balance[0], "accepted": 0, "pending": 0, "rejected": 0, "rejected_reasons": {}, "events": []}

    quiet_session.rewards = rewards

    async def scenario(app, pilot):
        await pilot.press("3")
        summary = app.screen.query_one("#summary")
        await until(pilot, lambda: "balance     0.0000 KNACK" in str(summary.render()), 5, "the first reading")
        balance[0] = "1.5000"
        on_a_stage_thread(lambda: quiet_session.post(ev.ClipsSettled(1)))
        await until(pilot, lambda: "balance     1.5000 KNACK" in str(summary.render()), 3, "the balance read again")

    drive(KnackApp(quiet_session), scenario)


def test_a_chain_problem_shows_on_the_record_screen_while_it_lasts(quiet_session):
    async def scenario(app, pilot):
        status = app.screen.query_one("#clip-status")
        on_a_stage_thread(lambda: quiet_session.post(ev.Problem("chain", "connection refused")))
        await until(pilot, lambda: "connection refused" in str(status.render()), 3, "the problem on the card")
        assert app.chain_problem == "connection refused"
        on_a_stage_thread(lambda: quiet_session.post(ev.ProblemCleared("chain")))
        await until(pilot, lambda: "connection refused" not in str(status.render()), 3, "the problem to go")

    drive(KnackApp(quiet_session), scenario)


@pytest.fixture
def idle_session(tmp_path, device_key):
    """A session with no sources and its recorder in this process, not started: a task named is only queued."""
    config = from_mapping({"data_dir": str(tmp_path / "data"), "recorder": {"own_process": False, "task": "solder a header"}}).validate()
    session = DeviceSession(config, device_key, label=False, chain_every_s=CHAIN_EVERY_S)
    yield session
    session.close()


def test_the_task_field_shows_the_task_from_the_configuration(idle_session):
    async def scenario(app, pilot):
        assert app.screen.query_one("#task").value == "solder a header"
        assert "task      solder a header" in str(app.screen.query_one("#clip-status").render())

    drive(KnackApp(idle_session), scenario)


def test_enter_in_the_task_field_names_the_task_to_the_session(idle_session):
    async def scenario(app, pilot):
        await pilot.press("t", "ctrl+a", "ctrl+k", *"clean the tip", "enter")
        status = app.screen.query_one("#clip-status")
        await until(pilot, lambda: "task      clean the tip" in str(status.render()), 3, "the new task on the status")
        assert idle_session.task == "clean the tip" and app.task_text == "clean the tip"
        assert app.focused is app.screen.query_one("#cards")  # r, s, x and m work again
        assert "task: clean the tip" in app.log_lines

    drive(KnackApp(idle_session), scenario)


def test_text_that_cannot_be_a_task_is_refused_with_the_reason(idle_session):
    async def scenario(app, pilot):
        await pilot.press("t")
        field = app.screen.query_one("#task")
        field.value = "clean\tthe tip"  # pasted from a spreadsheet
        await pilot.press("enter")
        await until(pilot, lambda: notices(app), 3, "the refusal")
        assert notices(app) == ["not a task: task holds the control character '\\t'"]
        assert idle_session.task == "solder a header" and field.value == "solder a header"

    drive(KnackApp(idle_session), scenario)


def test_escape_leaves_the_task_field_and_names_nothing(idle_session):
    async def scenario(app, pilot):
        await pilot.press("t", *" and inspect", "escape")
        await pilot.pause(0.2)
        assert app.screen.query_one("#task").value == "solder a header" and idle_session.task == "solder a header"
        assert app.focused is app.screen.query_one("#cards")

    drive(KnackApp(idle_session), scenario)


def test_a_written_clip_counts_on_the_record_screen(quiet_session):
    path = add_clip(quiet_session, CLIP)

    async def scenario(app, pilot):
        status = app.screen.query_one("#clip-status")
        await until(pilot, lambda: "outbox    1 recorded" in str(status.render()), 3, "the outbox's counts")
        clip = type("Clip", (), {"clip_id": CLIP, "path": path, "frames": 60, "samples": 400})()
        on_a_stage_thread(lambda: quiet_session.post(ev.ClipWritten(clip)))
        await until(pilot, lambda: "clips     1 written" in str(status.render()), 3, "the clip counted")

    drive(KnackApp(quiet_session), scenario)


class RequestsHeard(KnackApp):
    """The app, noting each request a screen makes of it (its own handler still runs after this one)."""

    def __init__(self, session):
        super().__init__(session)
        self.requests: list = []

    def on_discard_requested(self, message: msg.DiscardRequested) -> None:
        self.requests.append(message)

    def on_retry_requested(self, message: msg.RetryRequested) -> None:
        self.requests.append(message)


def test_discard_on_the_clips_screen_is_a_request_the_app_carries_out(quiet_session):
    path = add_clip(quiet_session, CLIP)

    async def scenario(app, pilot):
        await pilot.press("2")
        table = app.screen.query_one("#clips")
        await until(pilot, lambda: table.row_count == 1, 5, "the clip in the table")
        await pilot.press("d", "y")
        await until(pilot, lambda: table.row_count == 0, 3, "the row to go")
        assert app.requests == [msg.DiscardRequested(CLIP)]
        assert not path.exists() and quiet_session.outbox.get(CLIP) is None

    drive(RequestsHeard(quiet_session), scenario)


def test_retry_on_the_clips_screen_is_a_request_for_the_selected_clip(quiet_session):
    add_clip(quiet_session, CLIP)

    async def scenario(app, pilot):
        await pilot.press("2")
        await until(pilot, lambda: app.screen.query_one("#clips").row_count == 1, 5, "the clip in the table")
        await pilot.press("t")
        await until(pilot, lambda: any(line.startswith("retry:") for line in app.log_lines), 3, "the app to retry")
        assert app.requests == [msg.RetryRequested([CLIP])]

    drive(RequestsHeard(quiet_session), scenario)


def test_submit_now_asks_the_session_for_a_chain_round(quiet_session, monkeypatch):
    asked = []
    monkeypatch.setattr(quiet_session.chain, "settle_now", lambda: asked.append(True))

    async def scenario(app, pilot):
        await pilot.press("S")
        assert asked == [True]

    drive(KnackApp(quiet_session), scenario)

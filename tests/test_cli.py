"""The `knack` command as a user runs it: separate processes, real pty, real files."""

import json
import os
import re
import subprocess
import sys
import time

import pytest

from collector.bundle import list_clips, verify_bundle
from tests.conftest import write_video

KNACK = [sys.executable, "-m", "knack"]


@pytest.fixture
def env(tmp_path):
    return dict(
        os.environ, HOME=str(tmp_path), XDG_DATA_HOME=str(tmp_path / "share"), XDG_CONFIG_HOME=str(tmp_path / "config"), KNACK_DEVICE_PASSWORD="correct horse"
    )


def knack(*args, env, timeout=120, check=True):
    out = subprocess.run([*KNACK, *args], env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if check:
        assert out.returncode == 0, out.stdout + out.stderr
    return out


@pytest.fixture
def simulated_port(env):
    proc = subprocess.Popen([*KNACK, "simulate", "serial", "--rate", "500", "--protocol", "jsonl"], env=env, stdout=subprocess.PIPE, text=True)
    first = proc.stdout.readline()
    port = re.search(r"on (\S+)", first).group(1)
    yield port
    proc.terminate()
    assert proc.wait(10) == 0


def bench_config(tmp_path, frames: int, port: str):
    """knack.toml: a video-file camera of `frames` numbered frames and a simulated glove on `port`, 1 s clips."""
    video = write_video(tmp_path / "bench.mp4", frames=frames)
    config = tmp_path / "knack.toml"
    config.write_text(f"""
[recorder]
clip_seconds = 1
[[camera]]
name = "bench"
source = "{video}"
[[serial]]
name = "glove"
port = "{port}"
protocol = "jsonl"
seq_field = "seq"
device_time_field = "t_us"
""")
    return config


def test_simulate_then_record_then_verify(tmp_path, env, simulated_port):
    config = bench_config(tmp_path, 60, simulated_port)
    out = knack("--config", str(config), "record", "--until-end", "--duration", "30", env=env)
    assert "Created device key 0x" in out.stdout and "clip(s) written, 0 failed" in out.stdout
    clips = list_clips(tmp_path / "share/knack/clips")
    assert len(clips) >= 2
    # Each clip was labeled as it was written: test blocks on grey show no hands, so each is rejected with that reason.
    assert f"{len(clips)} labeled: 0 accepted, {len(clips)} rejected" in out.stdout, out.stdout + out.stderr
    assert all(json.loads((c / "manifest.json").read_text())["decision"]["reasons"][0]["code"] in ("no_hands", "too_short", "no_video") for c in clips)
    out = knack("verify", *map(str, clips), env=env)
    assert out.stdout.count("OK ") == len(clips)
    # Tamper with one byte of one clip: verify names the clip and the file, and fails.
    sensors = clips[0] / "sensors.parquet"
    data = bytearray(sensors.read_bytes())
    data[40] ^= 0xFF
    sensors.write_bytes(bytes(data))
    out = knack("verify", *map(str, clips), env=env, check=False)
    assert out.returncode == 1
    assert f"FAILED  {clips[0]}" in out.stdout and "sensors.parquet: sha256 is" in out.stdout


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """One `knack demo` from a fresh home (no configuration, no keys), shared by the tests below."""
    home = tmp_path_factory.mktemp("demo-home")
    env = dict(os.environ, HOME=str(home), XDG_DATA_HOME=str(home / "share"), XDG_CONFIG_HOME=str(home / "config"), KNACK_DEVICE_PASSWORD="correct horse")
    for name in ("KNACK_CONFIG", "KNACK_DATA_DIR", "KNACK_VALIDATOR_PASSWORD", "KNACK_VALIDATOR_KEY"):
        env.pop(name, None)
    out = knack("demo", env=env, timeout=300)
    return out, env, home / "share" / "knack" / "demo"


def test_demo_runs_end_to_end_on_the_bundled_sample(demo):
    out, _, data = demo
    assert "verified clip bundle(s)" in out.stdout and "FAILED" not in out.stdout, out.stdout + out.stderr
    clips = list_clips(data / "clips")
    assert len(clips) >= 2
    for clip in clips:
        manifest = json.loads((clip / "manifest.json").read_text())
        assert {s["kind"] for s in manifest["streams"]} == {"camera", "serial"}
        assert manifest["labels"]["execution_provider"] == "CPUExecutionProvider"
        assert manifest["decision"]["status"] in ("accepted", "rejected") and manifest["privacy"]["method"]
        assert manifest["task"] == "open, pinch, spread and close the fingers of one hand"  # what the sample shows


def test_demo_accepts_the_sample_on_the_default_policy(demo):
    out, _, _ = demo
    report = out.stdout[out.stdout.find("2. label") :]
    assert "ACCEPTED" in report and "REJECTED" not in report, report
    assert "PINNED" in report and re.search(r"settled by the validator: [1-9]\d* accepted, 0 rejected", report), report


def test_demo_ends_with_the_contributors_balance(demo):
    out, _, _ = demo
    assert re.search(r"balance: [1-9]\d*\.\d+ KNACK|balance: 0\.[1-9]\d* KNACK", out.stdout.splitlines()[-1]), out.stdout[-500:]


def test_after_the_demo_its_export_line_makes_the_other_commands_work_on_what_it_recorded(demo):
    out, env, data = demo
    [line] = [line.strip() for line in out.stdout.splitlines() if line.strip().startswith("export KNACK_DATA_DIR=")]
    env = dict(env, KNACK_DATA_DIR=line.split("=", 1)[1])
    clips = json.loads(knack("clips", "--json", env=env).stdout)
    assert len(clips) == len(list_clips(data / "clips")) and {c["state"] for c in clips} == {"settled"}
    rewards = json.loads(knack("rewards", "--json", env=env).stdout)
    assert rewards["accepted"] == len(clips) and int(rewards["balance"]) > 0
    verified = knack("verify", *map(str, list_clips(data / "clips")), env=env)
    assert verified.stdout.count("OK ") == len(clips)


def test_after_the_demo_a_dataset_holds_every_paid_clip_verified_against_the_chain(demo, tmp_path):
    import pyarrow.parquet as pq

    _, env, data = demo
    env = dict(env, KNACK_DATA_DIR=str(data))
    settled = {c["cid"] for c in json.loads(knack("clips", "--json", env=env).stdout) if c["state"] == "settled" and float(c.get("reward_tokens") or 0) > 0}
    out = knack("dataset", "build", str(tmp_path / "ds"), "--workers", "2", env=env, timeout=300)
    info = json.loads((tmp_path / "ds/meta/info.json").read_text())
    episodes = pq.read_table(tmp_path / "ds/meta/episodes/chunk-000/file-000.parquet").to_pylist()
    report = json.loads((tmp_path / "ds/knack-build-report.json").read_text())
    # Every paid clip is an episode, unless its frames were too far off the grid: a loaded machine (CI beside other
    # jobs) can hold a file camera's frames back by more than half a frame, and such a clip is left out, saying so.
    assert info["total_episodes"] == len(episodes) >= 1 and len(episodes) + len(report["left_out"]) == len(settled), out.stdout + out.stderr
    assert all("grid" in o["reason"] for o in report["left_out"]), report["left_out"]
    assert {e["knack/cid"] for e in episodes} <= settled and {e["knack/source"] for e in episodes} == {"chain"}
    assert all(e["knack/merkle_proof"] is not None and e["knack/batch"] >= 0 and e["knack/quality"] > 0 for e in episodes)
    # The demo names its task, and it became the dataset's.
    assert {e["tasks"][0] for e in episodes} != {"unspecified task"}
    checked = knack("dataset", "verify", str(tmp_path / "ds"), env=env, timeout=300)
    assert checked.stdout.count("OK ") == len(episodes) and "FAILED" not in checked.stdout, checked.stdout
    # A dataset whose provenance was edited (an episode claiming another batch position) fails its check.
    table = pq.read_table(tmp_path / "ds/meta/episodes/chunk-000/file-000.parquet")
    rows = table.to_pylist()
    rows[0]["knack/batch_index"] = rows[0]["knack/batch_index"] + 1
    pq.write_table(type(table).from_pylist(rows, schema=table.schema), tmp_path / "ds/meta/episodes/chunk-000/file-000.parquet")
    checked = knack("dataset", "verify", str(tmp_path / "ds"), env=env, timeout=300, check=False)
    assert checked.returncode == 1 and "FAILED  episode 0" in checked.stdout and checked.stdout.count("OK ") == len(episodes) - 1, checked.stdout


def test_the_demo_asks_one_password_for_its_three_keys_and_says_what_each_is_for(tmp_path):
    """At a terminal with no KNACK_DEVICE_PASSWORD: one prompt, whatever keys are created."""
    import pty

    env = dict(os.environ, HOME=str(tmp_path), XDG_DATA_HOME=str(tmp_path / "share"), XDG_CONFIG_HOME=str(tmp_path / "config"))
    for name in (
        "KNACK_DEVICE_PASSWORD",
        "KNACK_VALIDATOR_PASSWORD",
        "KNACK_VALIDATOR_KEY",
        "KNACK_CONTRIBUTOR_KEY",
        "KNACK_CONTRIBUTOR_PASSWORD",
        "KNACK_CONFIG",
        "KNACK_DATA_DIR",
    ):
        env.pop(name, None)
    script = "from collector.config import load; from knack.demo import demo_keys; base = load(); k = demo_keys(base, base.data_path / 'demo'); print('KEYS', k.device.address, k.validator.address, k.contributor.address)"
    pid, fd = pty.fork()
    if pid == 0:
        os.execvpe(sys.executable, [sys.executable, "-c", script], env)
    screen, unanswered, prompts = "", "", 0
    while True:
        try:
            chunk = os.read(fd, 4096).decode(errors="replace")
        except OSError:
            break
        if not chunk:
            break
        screen += chunk
        unanswered += chunk
        if unanswered.rstrip().endswith(":") and "assword" in unanswered.rstrip().splitlines()[-1]:
            prompts += 1
            unanswered = ""
            os.write(fd, b"one password\n")
    os.waitpid(pid, 0)
    assert prompts == 1, screen
    assert "device key signs every clip" in screen and "validator key stands in for the network's validator" in screen
    assert "contributor key registers the device" in screen
    assert re.search(r"KEYS 0x[0-9a-fA-F]{40} 0x[0-9a-fA-F]{40} 0x[0-9a-fA-F]{40}", screen), screen


def test_doctor_shows_config_data_dir_and_reachable_parts(tmp_path, env, simulated_port):
    video = write_video(tmp_path / "v.mp4", frames=5)
    config = tmp_path / "knack.toml"
    config.write_text(f'[[camera]]\nsource = "{video}"\n[[serial]]\nport = "{simulated_port}"\n[storage]\nipfs_api = "/ip4/127.0.0.1/tcp/9/http"\n')
    out = knack("--config", str(config), "doctor", env=env, check=False)
    assert "[[serial]]" in out.stdout and f'port = "{simulated_port}"' in out.stdout
    assert f"Data directory: {tmp_path}/share/knack" in out.stdout
    assert re.search(r"ok +camera cam0 +.*320x240", out.stdout)
    assert re.search(r"ok +serial imu ", out.stdout)
    assert re.search(r"fail +ipfs daemon +/ip4/127.0.0.1/tcp/9/http is not reachable", out.stdout)
    assert re.search(r"ok +onnxruntime", out.stdout)
    assert re.search(r"ok +model palm_detection +mediapipe-palm-detection-lite 0.10.14 on CPUExecutionProvider", out.stdout)
    assert re.search(r"ok +model face_detection +mediapipe-face-detection-full-range", out.stdout)
    assert re.search(r"(ok|info) +execution provider +CPUExecutionProvider", out.stdout)
    assert out.returncode == 1  # something configured is unreachable
    assert "correct horse" not in out.stdout


def test_devices_lists_ports_as_json(env):
    listing = json.loads(knack("devices", "--json", env=env).stdout)
    assert set(listing) == {"cameras", "serial_ports"}


def test_errors_are_one_line_with_an_exit_code(tmp_path, env):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[serial]]\nprotocol = "nmea"\n')
    out = knack("--config", str(bad), "record", env=env, check=False)
    assert out.returncode == 2 and out.stderr.strip().count("\n") == 0
    assert "serial[0].protocol = 'nmea' is not valid" in out.stderr
    config = tmp_path / "ok.toml"
    config.write_text(f'[[camera]]\nsource = "{write_video(tmp_path / "v.mp4", 3)}"\n')
    no_password = {k: v for k, v in env.items() if k != "KNACK_DEVICE_PASSWORD"}
    out = knack("--config", str(config), "record", "--duration", "1", env=no_password, check=False)
    assert out.returncode == 2
    assert out.stderr.strip() == "knack: error: the device key needs a password: set KNACK_DEVICE_PASSWORD or run from a terminal to be asked"
    knack("--config", str(config), "record", "--duration", "0.5", env=env)
    out = knack("--config", str(config), "record", "--duration", "0.5", env=dict(env, KNACK_DEVICE_PASSWORD="wrong"), check=False)
    assert out.returncode == 2 and "wrong password for the device key" in out.stderr


def test_a_contributor_registers_a_device_then_clears_its_strikes_and_revokes_it(env):
    """`knack chain deploy`, then the device's life on chain through `knack device …`, each step one line."""
    import hashlib

    env = dict(env, KNACK_VALIDATOR_KEY="0x" + hashlib.sha256(b"admin").hexdigest(), KNACK_CONTRIBUTOR_KEY="0x" + hashlib.sha256(b"contributor").hexdigest())
    for name in ("KNACK_CONFIG", "KNACK_DATA_DIR"):
        env.pop(name, None)
    assert "Validators must run this configuration's models and policy" in knack("chain", "deploy", env=env).stdout
    assert "the same: a validator with this config settles" in knack("chain", "policy", env=env).stdout
    no_key = knack("device", "show", env=env, check=False)
    assert no_key.returncode == 2 and "this device has no key yet" in no_key.stderr and "Traceback" not in no_key.stderr
    unregistered = knack("device", "show", "0x" + "12" * 20, env=env, check=False)
    assert unregistered.returncode == 1 and "is not registered" in unregistered.stdout
    assert "is registered to contributor" in knack("device", "register", env=env).stdout
    assert "was already registered" in knack("device", "register", env=env).stdout
    shown = knack("device", "show", env=env).stdout
    assert "active, paying contributor" in shown and "strikes 0: 3 within 7 day(s) block it" in shown
    assert "strikes cleared" in knack("device", "clear-strikes", env=env).stdout
    assert "is revoked" in knack("device", "revoke", env=env).stdout
    again = knack("device", "revoke", env=env, check=False)
    assert again.returncode == 2 and again.stderr.startswith("knack: error: ") and again.stderr.count("\n") == 1 and "Traceback" not in again.stderr
    assert "revoked" in knack("device", "show", env=env).stdout


def test_record_task_is_signed_into_every_clip(tmp_path, env, simulated_port):
    config = bench_config(tmp_path, 45, simulated_port)
    out = knack("--config", str(config), "record", "--until-end", "--duration", "30", "--no-label", "--task", " solder a header onto a PCB ", env=env)
    assert "Task: solder a header onto a PCB" in out.stdout
    clips = list_clips(tmp_path / "share/knack/clips")
    assert clips and all(json.loads((c / "manifest.json").read_text())["task"] == "solder a header onto a PCB" for c in clips)
    assert all(verify_bundle(c).ok for c in clips)


def test_a_record_task_that_cannot_be_one_is_a_one_line_error(tmp_path, env):
    out = knack("record", "--task", "solder\nACCEPTED", env=env, check=False, timeout=60)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.startswith("knack: error: recorder.task = 'solder\\nACCEPTED' is not valid: expected one line") and out.stderr.count("\n") == 1


def test_a_video_file_camera_that_does_not_exist_is_an_error_at_start(tmp_path, env):
    config = tmp_path / "knack.toml"
    config.write_text(f'[[camera]]\nname = "bench"\nsource = "{tmp_path / "tpyo.mp4"}"\n')
    out = knack("--config", str(config), "record", "--duration", "30", env=env, check=False, timeout=60)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip() == f"knack: error: camera bench: the video file {tmp_path / 'tpyo.mp4'} does not exist", out.stderr


def test_recording_stops_when_every_video_file_camera_has_ended(tmp_path, env, simulated_port):
    # Without --until-end, a serial sensor would otherwise go on filling clips that have no video.
    config = bench_config(tmp_path, 45, simulated_port)
    started = time.monotonic()
    out = knack("--config", str(config), "record", "--duration", "60", "--no-label", env=env, timeout=90)
    assert time.monotonic() - started < 45, "it stopped at the end of the file, not after the 60 s asked for"
    assert "every camera's video file has ended: recording stops there" in out.stdout
    clips = list_clips(tmp_path / "share/knack/clips")
    assert clips and all((c / "video.mp4").exists() for c in clips), [sorted(p.name for p in c.iterdir()) for c in clips]

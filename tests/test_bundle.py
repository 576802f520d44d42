"""Clip bundles: verification catches every change, and a crash never leaves a half clip that looks whole."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from collector import bundle
from collector.bundle import PARTIAL_PREFIX, canonical, list_clips, new_clip_id, recover_partials, verify_bundle
from collector.identity import load_or_create
from collector.recorder import Recorder
from collector.sources import make_sources
from tests.conftest import imu_serial, wait_until, write_video


@pytest.fixture(scope="module")
def recorded_clip(tmp_path_factory, device_key):
    """One real clip from a video file and a pty sensor, copied fresh for each test that changes it."""
    from collector.config import from_mapping
    from collector.simulator import SerialSimulator, SimulatorConfig

    root = tmp_path_factory.mktemp("clip")
    video = write_video(root / "cam.mp4", frames=20)
    with SerialSimulator(SimulatorConfig(rate=300, protocol="csv")) as sim:
        config = from_mapping({"data_dir": str(root / "data"), "camera": [{"name": "cam", "source": str(video)}], "serial": [imu_serial(sim.port)]})
        written = []
        recorder = Recorder(config, make_sources(config), device_key, on_clip=written.append).start()
        assert wait_until(recorder.sources_ended, 10)
        recorder.close(at_ns=recorder.files_end_ns())
    return written[0].path


def random_frames(count: int = 6) -> list:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (120, 160, 3), dtype=np.uint8) for _ in range(count)]


@pytest.fixture
def clip(recorded_clip, tmp_path):
    return Path(shutil.copytree(recorded_clip, tmp_path / recorded_clip.name))


def test_an_untouched_clip_verifies(clip, device_key):
    result = verify_bundle(clip)
    assert result.ok, result.problems
    assert result.signer == device_key.address


def test_a_changed_byte_is_named_with_its_file(clip):
    video = clip / "video.mp4"
    data = bytearray(video.read_bytes())
    data[len(data) // 2] ^= 0x01
    video.write_bytes(bytes(data))
    [problem] = verify_bundle(clip).problems
    assert problem.startswith("video.mp4: sha256 is ") and "manifest says" in problem


def test_missing_truncated_and_extra_files_are_each_reported(clip):
    (clip / "frames.parquet").unlink()
    with open(clip / "sensors.parquet", "r+b") as f:
        f.truncate(100)
    (clip / "notes.txt").write_text("added later")
    problems = verify_bundle(clip).problems
    assert "frames.parquet: listed in the manifest but missing" in problems
    assert any(p.startswith("sensors.parquet: size is 100 bytes") for p in problems)
    assert "notes.txt: present but not listed in the manifest" in problems


def test_an_edited_manifest_breaks_the_signature(clip):
    path = clip / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["contributor"] = "0x" + "11" * 20  # someone redirects the reward
    path.write_text(json.dumps(manifest))
    [problem] = verify_bundle(clip).problems
    assert problem.startswith("signature is not valid: it recovers to 0x")


def test_a_changed_task_breaks_the_signature(clip):
    path = clip / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["task"] = "debone a chicken thigh"  # relabelled as a task that pays better
    path.write_text(json.dumps(manifest))
    [problem] = verify_bundle(clip).problems
    assert problem.startswith("signature is not valid: it recovers to 0x")


def test_a_copy_made_to_label_a_shared_clip_again_keeps_its_task(make_clip, device_key):
    original = make_clip(random_frames(), task="debone a chicken thigh")
    copy = bundle.copy_as_new(original, device_key)
    manifest = json.loads((copy / "manifest.json").read_text())
    assert bundle.manifest_task(manifest) == "debone a chicken thigh" and manifest["parent"] == original.name
    assert verify_bundle(copy).ok


def test_a_clip_recorded_before_tasks_has_none_and_verifies(make_clip):
    clip = make_clip(random_frames())  # its manifest has no "task" at all
    manifest = json.loads((clip / "manifest.json").read_text())
    assert "task" not in manifest and bundle.manifest_task(manifest) == ""
    assert verify_bundle(clip).ok


def test_a_manifest_signed_by_another_key_is_rejected(clip, tmp_path):
    other, _ = load_or_create(tmp_path / "other.json", "pw", kdf="pbkdf2", iterations=1000)
    path = clip / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["signature"] = other.sign(canonical(manifest))
    path.write_text(json.dumps(manifest))
    [problem] = verify_bundle(clip).problems
    assert other.address in problem and manifest["device_id"] in problem


def test_garbage_manifest_and_signature_are_reported_not_raised(clip):
    path = clip / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["signature"]["value"] = "0x1234"
    path.write_text(json.dumps(manifest))
    assert verify_bundle(clip).problems[0].startswith("signature is unreadable")
    path.write_text("{not json")
    assert verify_bundle(clip).problems[0].startswith("manifest.json is not valid JSON")


def test_clip_ids_sort_by_time_and_are_unique():
    ids = [new_clip_id(1_700_000_000_000 + i) for i in range(50)]
    assert ids == sorted(ids) and len(set(ids)) == 50
    assert all(i[14] == "7" for i in ids)  # UUID version 7


def crash_at_rename(monkeypatch):
    def crash(src, dst):
        raise OSError("injected crash before the rename")

    monkeypatch.setattr(bundle.os, "rename", crash)


def test_a_crash_before_the_rename_leaves_no_clip_and_the_partial_is_salvaged(simulator, make_config, device_key, monkeypatch, tmp_path):
    sim = simulator(rate=300, protocol="csv")
    config = make_config([{"name": "cam", "source": str(write_video(tmp_path / "v.mp4", 10))}], [imu_serial(sim.port)], clip_seconds=10)
    crash_at_rename(monkeypatch)
    recorder = Recorder(config, make_sources(config), device_key).start()
    assert wait_until(recorder.sources_ended, 10)
    totals = recorder.close(at_ns=recorder.files_end_ns())
    assert totals.failed == 1 and totals.clips == 0
    assert list_clips(config.clips_path) == []
    [partial] = config.clips_path.glob(PARTIAL_PREFIX + "*")
    monkeypatch.undo()
    [message] = recover_partials(config.clips_path)
    assert message.startswith("salvaged clip ")
    [clip] = list_clips(config.clips_path)
    assert clip.name == partial.name[len(PARTIAL_PREFIX) :] and verify_bundle(clip).ok


def test_a_crash_mid_clip_leaves_a_partial_that_is_removed_on_the_next_start(simulator, make_config, device_key, monkeypatch):
    sim = simulator(rate=300, protocol="csv")
    config = make_config([], [imu_serial(sim.port)], clip_seconds=10)

    def crash(*args, **kwargs):
        raise OSError("injected crash while writing the manifest")

    monkeypatch.setattr("collector.recorder.write_manifest", crash)
    recorder = Recorder(config, make_sources(config), device_key).start()
    time.sleep(0.5)
    assert recorder.close().failed == 1
    assert list_clips(config.clips_path) == []
    monkeypatch.undo()
    recorder = Recorder(config, make_sources(config), device_key).start(record=False)
    recorder.close()
    assert len(recorder.recovered) == 1 and recorder.recovered[0].startswith("removed interrupted clip")
    assert not list(config.clips_path.glob(PARTIAL_PREFIX + "*"))


@pytest.mark.parametrize("own_process", [True, False])
def test_kill_9_mid_clip_leaves_only_verified_clips(tmp_path, simulator, own_process):
    sim = simulator(rate=500, protocol="csv")
    video = write_video(tmp_path / "cam.mp4", frames=30)
    data = tmp_path / "data"
    (tmp_path / "knack.toml").write_text(f"""
data_dir = "{data}"
[recorder]
clip_seconds = 0.7
own_process = {str(own_process).lower()}
[[camera]]
name = "cam"
source = "{video}"
loop = true
[[serial]]
name = "imu"
port = "{sim.port}"
csv_columns = ["t_us", "seq", "ax", "ay", "az", "gx", "gy", "gz"]
""")
    env = dict(os.environ, KNACK_DEVICE_PASSWORD="pw", KNACK_CONFIG=str(tmp_path / "knack.toml"))
    cmd = [sys.executable, "-m", "knack", "record"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # Kill while a clip is being recorded, after at least one was sealed.
        assert wait_until(lambda: len(list_clips(data / "clips")) >= 1 and any((data / "clips").glob(PARTIAL_PREFIX + "*")), 30)
    finally:
        at_kill = len(list_clips(data / "clips"))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    if own_process:
        # The capture process outlives the command: it seals the clip it had open and exits. Nothing is left
        # half-written and nothing is lost.
        assert wait_until(lambda: not any((data / "clips").glob(PARTIAL_PREFIX + "*")), 30)
        assert len(list_clips(data / "clips")) >= at_kill + 1
    else:
        assert any((data / "clips").glob(PARTIAL_PREFIX + "*"))
    for clip in list_clips(data / "clips"):
        assert verify_bundle(clip).ok
    sealed = len(list_clips(data / "clips"))
    out = subprocess.run(cmd + ["--duration", "0.3"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    if not own_process:
        assert "interrupted clip" in out.stdout or "salvaged clip" in out.stdout  # what a crash left, dealt with
    assert not list((data / "clips").glob(PARTIAL_PREFIX + "*"))
    assert len(list_clips(data / "clips")) >= sealed


def test_a_clip_that_cannot_be_sealed_for_a_while_is_retried_not_lost(simulator, make_config, device_key, monkeypatch, caplog):
    import collector.recorder

    sim = simulator(rate=300, protocol="csv")
    config = make_config([], [imu_serial(sim.port)], clip_seconds=0.5)
    real_rename, failures = os.rename, []

    def disk_full_for_a_while(src, dst):
        if len(failures) < 3:
            failures.append(src)
            raise OSError(28, "No space left on device")
        real_rename(src, dst)

    monkeypatch.setattr(bundle.os, "rename", disk_full_for_a_while)
    monkeypatch.setattr(collector.recorder, "FINISH_RETRY_S", 0.1)
    written = []
    with caplog.at_level("ERROR", logger="knack.recorder"):
        recorder = Recorder(config, make_sources(config), device_key, on_clip=written.append).start()
        time.sleep(1.6)
        totals = recorder.close()
    assert failures and totals.failed == 0
    assert len(list_clips(config.clips_path)) == totals.clips == len(written) >= 3
    assert not list(config.clips_path.glob(PARTIAL_PREFIX + "*"))
    assert any("No space left on device" in r.getMessage() and "retrying" in r.getMessage() for r in caplog.records)


def test_a_path_that_is_not_a_clip_directory_is_named(tmp_path):
    assert verify_bundle(tmp_path / "nope").problems == [f"{tmp_path / 'nope'} is not a clip directory"]


def test_a_manifest_signature_is_eip712_typed_data_that_a_wallet_library_reproduces(device_key):
    """The device's signature in a network's domain is exactly eth-account's `encode_typed_data` signature of
    KnackManifest(bytes32 manifestSha256); it recovers only in that domain."""
    import hashlib

    from eth_account import Account
    from eth_account.messages import encode_typed_data

    from collector.identity import SigningDomain, recover_signer

    domain = SigningDomain(31337, "0x" + "ab" * 20)
    message = b'{"clip_id":"c"}'
    signature = device_key.bind(domain).sign(message)
    typed = {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            "KnackManifest": [{"name": "manifestSha256", "type": "bytes32"}],
        },
        "primaryType": "KnackManifest",
        "domain": {"name": "Knack", "version": "1", "chainId": 31337, "verifyingContract": domain.registry},
        "message": {"manifestSha256": hashlib.sha256(message).digest()},
    }
    wallet = Account.sign_message(encode_typed_data(full_message=typed), device_key._key).signature
    assert signature["scheme"] == "eip712" and signature["value"] == "0x" + bytes(wallet).hex()
    assert recover_signer(message, signature) == device_key.address
    elsewhere = dict(signature, registry="0x" + "cd" * 20)  # the same bytes claimed for another registry
    assert recover_signer(message, elsewhere) != device_key.address

"""The network pays for what the validator verified, never for what a device claims (issue 13).

Each test is an attack as a dishonest contributor would run it on the embedded chain (a re-signed manifest,
a forged bundle pinned by hand, raw contract calls, `knack` commands), ending with no token minted and the
reason the validator or the registry gives; the honest clips beside them are still paid. One world for the
module: the sample recording cut into three distinct honest clips, labeled by the real labeler and checked
by the real validator (its own labeler, the network's policy digest from the chain)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from collector.bundle import MANIFEST, SENSORS, canonical, new_clip_id, seal, write_manifest, write_sensor_log
from collector.config import Config, PolicyConfig
from collector.identity import DeviceKey, SigningDomain
from collector.sample import SAMPLE_IMU, SAMPLE_VIDEO
from storage.content.cid import Cid
from storage.content.ipfs import EmbeddedStore
from storage.ledger.base import ChainError
from storage.ledger.reasons import Reason
from storage.ledger.web3_ledger import ARTIFACTS, open_ledger
from storage.validator import NetworkMismatch, Validator
from tests.test_labeler import manifest_of, read_video

pytestmark = pytest.mark.skipif(not (ARTIFACTS / "ClipRegistry.json").exists(), reason="the contract artifacts are not built")

FPS = 30.0
WINDOWS = ((0, 75), (75, 150), (150, 210))  # three distinct 2-2.5 s stretches of the sample: three honest clips
# The policy a lax device runs: it accepts anything at all.
LAX = PolicyConfig(
    min_duration_s=0,
    min_hand_fraction=0,
    max_edge_blur_px=50,
    min_luma=0,
    max_luma=255,
    max_underexposed_fraction=1,
    max_overexposed_fraction=1,
    max_hands_overexposed_fraction=1,
    max_frozen_fraction=1,
    max_face_area=1,
)


def new_key(seed: str) -> DeviceKey:
    from eth_account import Account

    account = Account.from_key(hashlib.sha256(seed.encode()).digest())
    return DeviceKey(account.address, bytes(account.key))


def imu_rows() -> np.ndarray:
    return np.loadtxt(SAMPLE_IMU, delimiter=",", skiprows=1)


def write_video(path: Path, frames, fps: float = FPS) -> None:
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    for frame in frames:
        writer.write(frame)
    writer.release()


def write_sensors(path: Path, rows: np.ndarray) -> None:
    """Rows of the sample's IMU log (t_us, seq, six channels) as the recorder writes a serial stream."""
    device_ns = [int(r[0]) * 1000 for r in rows]
    capture_ns = [t - device_ns[0] for t in device_ns]
    write_sensor_log(path, ["imu"] * len(rows), capture_ns, device_ns, rows[:, 2:].tolist(), {"imu": ["ax", "ay", "az", "gx", "gy", "gz"]})


def build_clip(root: Path, key: DeviceKey, frames, sensors: np.ndarray | None = None, fps: float = FPS) -> Path:
    """A bundle as the recorder writes it: video, frames table, sensor log, manifest signed by `key`."""
    root.mkdir(parents=True, exist_ok=True)
    clip_id = new_clip_id()
    partial = root / f".partial-{clip_id}"
    partial.mkdir()
    write_video(partial / "video.mp4", frames, fps)
    times = [int(i * 1e9 / fps) for i in range(len(frames))]
    pq.write_table(pa.table({"camera": ["bench"] * len(frames), "frame_index": list(range(len(frames))), "capture_ns": times}), partial / "frames.parquet")
    streams = [
        {"name": "bench", "kind": "camera", "source": "sample", "count": len(frames), "dropped": 0, "late": 0, "lost": 0, "parse_errors": {}, "gaps": []}
    ]
    if sensors is not None:
        write_sensors(partial / SENSORS, sensors)
        streams.append(
            {"name": "imu", "kind": "serial", "source": "pty", "count": len(sensors), "dropped": 0, "late": 0, "lost": 0, "parse_errors": {}, "gaps": []}
        )
    manifest = {
        "clip_id": clip_id,
        "device_id": key.address,
        "contributor": key.address,
        "start": {"utc": "2026-12-02T00:00:00Z", "mono_ns": 0},
        "end": {"utc": "2026-12-02T00:00:00Z", "mono_ns": times[-1]},
        "duration_s": len(frames) / fps,
        "streams": streams,
        "marks": [],
        "labels": None,
        "quality": None,
        "privacy": None,
        "decision": None,
    }
    write_manifest(partial, manifest, key)
    return seal(partial, root / clip_id)


def resign(clip: Path, key: DeviceKey, target: Path | None = None, **changes) -> Path:
    """An attacker's copy of `clip` (or the clip itself) with manifest fields changed and re-signed by `key`."""
    if target is not None:
        shutil.copytree(clip, target)
        clip = target
    manifest = dict(manifest_of(clip), device_id=key.address, contributor=key.address, **changes)
    write_manifest(clip, manifest, key)
    return clip


def write_raw_manifest(clip: Path, text: str | bytes) -> None:
    (clip / MANIFEST).write_bytes(text.encode() if isinstance(text, str) else text)


class Net:
    """The module's network: an embedded chain, a content store, the validator, two contributors with a
    device each, and helpers that act as a device would."""

    def __init__(self, root: Path):
        from collector.labeling.labeler import Labeler
        from collector.labeling.models import Models
        from collector.labeling.network import network_digest

        self.root = root
        self.config = dataclasses.replace(Config(data_dir=str(root / "data")), policy=PolicyConfig()).validate()
        self.store = EmbeddedStore(root / "data" / "ipfs" / "blocks.sqlite")
        self.ledger = open_ledger("", root / "data")
        self.admin = new_key("admin")
        self.ledger.deploy(self.admin, self.admin.address, policy=network_digest(self.config))
        self.domain = self.ledger.domain()
        self.contributor_a, self.contributor_b = new_key("contributor a"), new_key("contributor b")
        self.device_a = new_key("device a").bind(self.domain)
        self.device_b = new_key("device b").bind(self.domain)
        for device, contributor in ((self.device_a, self.contributor_a), (self.device_b, self.contributor_b)):
            self.ledger.register_device(device, device=device, contributor=contributor)
        self.models = Models(self.config.labeler)
        self.labelers = {}
        self.validator = Validator(
            self.ledger, self.store, self.admin, root / "data" / "validator.sqlite", self.config, labeler=Labeler(self.config, None, self.models)
        )
        self.frames = read_video(SAMPLE_VIDEO)
        self.imu = imu_rows()

    def labeler(self, key: DeviceKey, policy: PolicyConfig | None = None):
        from collector.labeling.labeler import Labeler

        config = dataclasses.replace(self.config, policy=policy or self.config.policy)
        return Labeler(config, key, self.models)

    def honest(self, window: int, key: DeviceKey | None = None) -> Path:
        key = key or self.device_a
        a, b = WINDOWS[window]
        clip = build_clip(self.root / "clips" / key.address, key, self.frames[a:b], self.imu[a * 200 // 30 : b * 200 // 30])
        labeled = self.labeler(key).label(clip)
        assert labeled.accepted, labeled.summary
        return clip

    def pin(self, clip: Path) -> Cid:
        return self.store.add(clip)

    def submit(self, key: DeviceKey, cids) -> int:
        return self.ledger.send_submission(*self.ledger.sign_submission(key, [c.digest for c in cids]))

    def settle(self) -> dict:
        return self.validator.run_once()

    def balances(self) -> tuple[int, ...]:
        return tuple(self.ledger.balance_of(k.address) for k in (self.contributor_a, self.contributor_b, self.device_a, self.device_b))

    def one(self, key: DeviceKey, clip: Path):
        """Pins and submits one clip, settles, and returns its verdict and what was minted for it."""
        before = sum(self.balances())
        batch = self.submit(key, [self.pin(clip)])
        [verdict] = self.settle()[batch]
        return verdict, sum(self.balances()) - before


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    net = Net(tmp_path_factory.mktemp("attacks"))
    yield net
    net.ledger.close()
    net.store.close()


@pytest.fixture(scope="module")
def paid(net):
    """The first honest clip, paid: what the duplicate attacks copy."""
    clip = net.honest(0)
    verdict, minted = net.one(net.device_a, clip)
    assert verdict.accepted, verdict
    assert minted > 0
    return clip


def strikes(net, key: DeviceKey) -> int:
    return net.ledger.device(key.address).strikes


def clear(net, key: DeviceKey, contributor: DeviceKey) -> None:
    record = net.ledger.device(key.address)
    if record.strikes or record.blocked:
        net.ledger.clear_strikes(contributor, key.address)


# --- the honest flow still pays, and pays the contributor -----------------------------------------------
def test_the_honest_clip_is_paid_at_the_validators_own_quality_to_the_contributor_not_the_device(net, paid):
    contributor, _, device, _ = net.balances()
    assert contributor > 0 and device == 0  # attack 6: the contributor the device is registered to is the one paid
    settlement = net.ledger.settlements_of(net.contributor_a.address)[0]
    assert settlement.accepted == (True,)
    claimed = manifest_of(paid)["quality"]["score"]
    assert abs(settlement.qualities_bps[0] / 10000 - claimed) <= net.config.validator.claim_tolerance  # its own measurement


# --- 1. a device's own policy, or its own word, is not the network's ---------------------------------------
def test_a_black_handless_clip_from_a_device_that_accepts_everything_earns_nothing(net):
    black = [np.zeros((360, 640, 3), np.uint8) for _ in range(90)]
    clip = build_clip(net.root / "lax", net.device_a, black)
    assert net.labeler(net.device_a, LAX).label(clip).accepted  # the device's own policy accepts it
    verdict, minted = net.one(net.device_a, clip)
    assert not verdict.accepted and minted == 0
    assert verdict.reason in (Reason.POLICY_REJECTED, Reason.CLAIM_MISMATCH), verdict
    clear(net, net.device_a, net.contributor_a)


def test_a_rejected_clip_resigned_as_accepted_at_full_quality_is_a_claim_mismatch_and_a_strike(net):
    dark = [np.full((360, 640, 3), 12, np.uint8) for _ in range(90)]
    clip = build_clip(net.root / "forged", net.device_a, dark)
    assert not net.labeler(net.device_a).label(clip).accepted
    accepted = {"status": "accepted", "accepted": True, "reasons": [], "summary": "accepted: every check passed"}
    resign(clip, net.device_a, decision=accepted, quality=dict(manifest_of(clip)["quality"], score=1.0))
    before = strikes(net, net.device_a)
    verdict, minted = net.one(net.device_a, clip)
    assert verdict.reason is Reason.CLAIM_MISMATCH and minted == 0
    assert "claimed quality 1.00" in verdict.detail and "measured 0." in verdict.detail
    assert strikes(net, net.device_a) == before + 1
    clear(net, net.device_a, net.contributor_a)


# --- 2. bundles that are not clips, from keys nobody registered -------------------------------------------
def test_a_manifest_only_bundle_from_a_key_made_on_the_spot_is_refused_by_the_registry(net):
    stranger = new_key("stranger").bind(net.domain)
    net.ledger.fund(stranger.address)
    clip = net.root / "stranger" / "c"
    clip.mkdir(parents=True)
    write_manifest(clip, {"clip_id": "x", "device_id": stranger.address, "decision": {"accepted": True}, "quality": {"score": 1.0}}, stranger)
    before = net.balances()
    with pytest.raises(ChainError, match="not registered"):
        net.submit(stranger, [net.pin(clip)] * 256)
    assert net.balances() == before


def test_256_manifest_only_bundles_from_a_registered_device_mint_nothing_and_still_settle(net):
    cids = []
    for i in range(256):
        clip = net.root / "empty" / str(i)
        clip.mkdir(parents=True)
        write_manifest(clip, {"clip_id": f"e{i}", "device_id": net.device_b.address, "decision": {"accepted": True}, "quality": {"score": 1.0}}, net.device_b)
        cids.append(net.pin(clip))
    before = net.balances()
    batch = net.submit(net.device_b, cids)
    verdicts = net.settle()[batch]
    assert {v.reason for v in verdicts} == {Reason.NO_VIDEO} and net.balances() == before
    assert net.ledger.settlement(batch) is not None


# --- 3. the same CID twice in one batch ------------------------------------------------------------------
def test_the_same_cid_twice_in_one_batch_is_paid_once(net):
    clip = net.honest(1, net.device_b)
    cid = net.pin(clip)
    before = net.balances()
    batch = net.submit(net.device_b, [cid, cid])
    first, second = net.settle()[batch]
    assert first.accepted and second.reason is Reason.DUPLICATE_CID and "earlier in this batch" in second.detail
    settlement = net.ledger.settlement(batch)
    assert settlement.accepted == (True, False)
    assert net.balances()[1] - before[1] == settlement.reward > 0
    clear(net, net.device_b, net.contributor_b)


# --- 4. content paid before, changed a little ------------------------------------------------------------
def _copy_of_paid(net, paid: Path, name: str, key: DeviceKey | None = None, **changes) -> Path:
    return resign(paid, key or net.device_a, net.root / "copies" / name, **changes)


def _reencoded(net, paid: Path, name: str, frames, fps: float = FPS, key: DeviceKey | None = None) -> Path:
    key = key or net.device_a
    clip = net.root / "copies" / name
    shutil.copytree(paid, clip)
    (clip / SENSORS).unlink()  # the paid sensor log would be caught as the same file: this is about the video
    write_video(clip / "video.mp4", frames, fps)
    resign(clip, key)
    net.labeler(key).label(clip)
    return clip


@pytest.mark.parametrize(
    "attack",
    ["field_added", "other_device_resigns", "byte_flipped", "reencoded_29fps", "renamed", "shifted_one_frame", "sensors_reused"],
)
def test_content_already_paid_is_not_paid_again(net, paid, attack):
    a, b = WINDOWS[0]
    frames = net.frames[a:b]
    key = net.device_a
    if attack == "field_added":
        clip = _copy_of_paid(net, paid, attack, note="one more field")
        expected = {Reason.DUPLICATE_VIDEO}
    elif attack == "other_device_resigns":  # keeps the clip id, signed by the second contributor's device
        key = net.device_b
        clip = _copy_of_paid(net, paid, attack, key=key)
        expected = {Reason.DUPLICATE_VIDEO}
    elif attack == "byte_flipped":
        clip = net.root / "copies" / attack
        shutil.copytree(paid, clip)
        (clip / SENSORS).unlink()
        data = bytearray((clip / "video.mp4").read_bytes())
        data[len(data) // 2] ^= 0xFF
        (clip / "video.mp4").write_bytes(bytes(data))
        resign(clip, key)
        expected = {Reason.NEAR_DUPLICATE_VIDEO}
    elif attack == "reencoded_29fps":
        clip = _reencoded(net, paid, attack, frames, fps=29.0)
        expected = {Reason.NEAR_DUPLICATE_VIDEO}
    elif attack == "renamed":  # the same bytes as clip.mp4: not a name of the bundle format
        clip = net.root / "copies" / attack
        shutil.copytree(paid, clip)
        (clip / "video.mp4").rename(clip / "clip.mp4")
        resign(clip, key)
        expected = {Reason.FILE_MISMATCH}
    elif attack == "shifted_one_frame":
        clip = _reencoded(net, paid, attack, frames[1:] + frames[-1:])
        expected = {Reason.NEAR_DUPLICATE_VIDEO}
    else:  # the paid sensor log, shifted by a few samples, under the third window's new video
        a3, b3 = WINDOWS[2]
        clip = build_clip(net.root / "copies" / attack, key, net.frames[a3:b3], net.imu[3 : 3 + (b - a) * 200 // 30])
        net.labeler(key).label(clip)
        expected = {Reason.NEAR_DUPLICATE_SENSORS, Reason.DUPLICATE_SENSORS}
    before = strikes(net, key)
    verdict, minted = net.one(key, clip)
    assert verdict.reason in expected, verdict
    assert minted == 0
    if verdict.reason.strike:
        assert strikes(net, key) == before + 1
    clear(net, key, net.contributor_b if key is net.device_b else net.contributor_a)


def test_a_validator_started_from_nothing_refuses_what_the_chain_paid(net, paid, tmp_path):
    fresh = Validator(net.ledger, net.store, net.admin, tmp_path / "fresh.sqlite", net.config, labeler=net.validator.labeler)
    cid = net.pin(paid)
    batch = net.submit(net.device_a, [cid])
    [verdict] = fresh.run_once()[batch]
    assert verdict.reason is Reason.DUPLICATE_CID and "paid in batch" in verdict.detail
    assert len(fresh.memory) >= 1 and fresh.memory.files  # the paid content itself, fetched by CID
    net.validator.sync()
    clear(net, net.device_a, net.contributor_a)


def test_paid_content_that_could_not_be_fetched_is_fetched_again_later(net, paid, tmp_path):
    """A validator whose store did not have the paid clips yet remembers their CIDs, and their content (so their
    near duplicates) once the store has it."""
    empty = EmbeddedStore(tmp_path / "empty.sqlite")
    fresh = Validator(net.ledger, empty, net.admin, tmp_path / "late.sqlite", net.config, labeler=net.validator.labeler)
    fresh.sync()
    assert str(net.pin(paid)) in fresh.memory.cids and not fresh.memory.files
    fresh.store = net.store
    fresh.sync()
    video = next(e["sha256"] for e in manifest_of(paid)["files"] if e["name"] == "video.mp4")
    assert video in fresh.memory.files and len(fresh.memory.index) >= 1
    empty.close()


# --- signatures bound to one network ---------------------------------------------------------------------
def test_a_manifest_signed_for_another_registry_or_for_no_network_is_refused(net):
    other = SigningDomain(net.domain.chain_id, "0x" + "11" * 20)
    clip = build_clip(net.root / "replay", net.device_a, net.frames[150:210])
    net.labeler(net.device_a.bind(other)).label(clip)
    verdict, minted = net.one(net.device_a, clip)
    assert verdict.reason is Reason.BAD_SIGNATURE and "registry 0x1111" in verdict.detail and minted == 0
    unbound = DeviceKey(net.device_a.address, net.device_a._key)
    net.labeler(unbound).label(clip)
    verdict, minted = net.one(net.device_a, clip)
    assert verdict.reason is Reason.BAD_SIGNATURE and "no network" in verdict.detail and minted == 0


# --- 5. malformed bundles never stop a batch ------------------------------------------------------------
MALFORMED = {
    "list": "[]",
    "string signature": None,  # built below from a valid manifest
    "score abc": None,
    "score 10**400": None,
    "decision yes": None,
    "file without name": None,
    "deep": "[" * 200_000 + "]" * 200_000,
    "not json": b"\xff\xfe garbage",
    "nan": None,
}


def _malformed(net, name: str, where: str = "malformed") -> Path:
    clip = net.root / where / name.replace(" ", "_").replace("*", "")
    clip.mkdir(parents=True)
    base = {"clip_id": "m", "device_id": net.device_b.address, "decision": {"accepted": True}, "quality": {"score": 1.0}, "files": [], "schema": 1}
    base["signature"] = net.device_b.sign(canonical(base))
    text = MALFORMED[name]
    if text is None:
        changes = {
            "string signature": {"signature": "0xabc"},
            "score abc": {"quality": {"score": "abc"}},
            "decision yes": {"decision": "yes"},
            "file without name": {"files": [{"size": 1, "sha256": "00" * 32}]},
        }.get(name, {})
        manifest = dict(base, **changes)
        text = json.dumps(manifest)
        if name == "score 10**400":
            text = text.replace('"score": 1.0', '"score": 1' + "0" * 400)
        if name == "nan":
            text = text.replace('"score": 1.0', '"score": NaN')
    write_raw_manifest(clip, text)
    return clip


def test_malformed_manifests_are_rejected_with_a_reason_and_the_honest_clip_in_their_batch_is_paid(net):
    honest = net.honest(2, net.device_b)
    cids = [net.pin(_malformed(net, name)) for name in MALFORMED] + [net.pin(honest)]
    before = net.balances()
    batch = net.submit(net.device_b, cids)
    verdicts = net.settle()[batch]
    *bad, good = verdicts
    assert all(v.reason is Reason.MALFORMED for v in bad), [(v.reason, v.detail) for v in bad]
    assert any("levels deep" in v.detail for v in bad)
    assert good.accepted and net.balances()[1] > before[1]


def test_knack_verify_says_what_is_wrong_with_each_malformed_bundle_and_never_crashes(net):
    clips = [_malformed(net, name, "verify") for name in MALFORMED]
    out = subprocess.run([sys.executable, "-m", "knack", "verify", *map(str, clips)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert out.stdout.count("FAILED") == len(clips), out.stdout


# --- strikes, revocation, the network's rules -----------------------------------------------------------
def test_strikes_block_a_device_until_its_contributor_clears_them(net, paid):
    rules = net.ledger.strike_rules()
    clear(net, net.device_a, net.contributor_a)
    for _ in range(rules.max_strikes):
        cid = net.pin(paid)
        batch = net.submit(net.device_a, [cid])
        assert net.settle()[batch][0].reason is Reason.DUPLICATE_CID
    record = net.ledger.device(net.device_a.address)
    assert record.blocked and record.strikes >= rules.max_strikes
    with pytest.raises(ChainError, match="blocked"):
        net.submit(net.device_a, [net.pin(paid)])
    with pytest.raises(ChainError):
        net.ledger.clear_strikes(net.device_b, net.device_a.address)  # only its contributor (or the admin)
    net.ledger.clear_strikes(net.contributor_a, net.device_a.address)
    assert not net.ledger.device(net.device_a.address).blocked
    batch = net.submit(net.device_a, [net.pin(paid)])
    net.settle()
    clear(net, net.device_a, net.contributor_a)


def test_a_revoked_device_cannot_submit_and_a_validator_with_other_rules_settles_nothing(net, tmp_path):
    loser = new_key("device c").bind(net.domain)
    net.ledger.register_device(loser, device=loser, contributor=net.contributor_a)
    net.ledger.revoke_device(net.contributor_a, loser.address)
    clip = net.root / "revoked"
    clip.mkdir()
    write_manifest(clip, {"clip_id": "r", "device_id": loser.address}, loser)
    with pytest.raises(ChainError, match="revoked"):
        net.submit(loser, [net.pin(clip)])

    strict = dataclasses.replace(net.config, policy=dataclasses.replace(net.config.policy, min_hand_fraction=0.9))
    other = Validator(net.ledger, net.store, net.admin, tmp_path / "other.sqlite", strict, labeler=net.validator.labeler)
    batch = net.submit(net.device_b, [net.pin(_malformed(net, "list", "pending"))])  # anything pending
    with pytest.raises(NetworkMismatch, match="digest"):
        other.run_once()
    assert net.ledger.settlement(batch) is None
    net.settle()


def test_knack_validate_settles_a_batch_with_a_malformed_clip_and_exits_0(net, tmp_path):
    """The attacker's batch reaches `knack validate` as a service would run it: one line per clip, exit 0."""
    clip = _malformed(net, "score abc", "cli")
    batch = net.submit(net.device_b, [net.pin(clip)])
    data = Path(net.config.data_dir)
    net.ledger.close()
    net.store.close()
    env = dict(os.environ, KNACK_DATA_DIR=str(data), KNACK_VALIDATOR_KEY="0x" + net.admin._key.hex())
    try:
        out = subprocess.run([sys.executable, "-m", "knack", "validate"], capture_output=True, text=True, timeout=120, env=env)
    finally:
        net.ledger = open_ledger("", data)
        net.store = EmbeddedStore(data / "ipfs" / "blocks.sqlite")
        net.validator.chain, net.validator.store = net.ledger, net.store
    assert out.returncode == 0, out.stderr
    assert "malformed" in out.stdout and "Traceback" not in out.stderr
    assert net.ledger.settlement(batch) is not None

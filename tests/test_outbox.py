"""The outbox: idempotent transitions, backoff, and every accepted clip pinned exactly once through
kill -9, a store that fails, and a full disk."""

import errno
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from storage.content.cid import Cid
from storage.content.ipfs import EmbeddedStore, StoreUnavailable
from storage.content.unixfs import add_path
from storage.outbox.db import BACKOFF_MAX_S, NEVER, Outbox, backoff
from storage.outbox.pinner import enqueue_all, pin_due
from tests.conftest import knack_cli

ACCEPTED = {"status": "accepted", "accepted": True, "reasons": [], "summary": "accepted: every check passed"}
REJECTED = {"status": "rejected", "accepted": False, "reasons": [{"code": "no_hands"}], "summary": "rejected: no hands in 90% of frames"}


def noise_frames(count, seed, size=(240, 320)):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (*size, 3), dtype=np.uint8) for _ in range(count)]


@pytest.fixture
def clips(make_clip):
    def make(n, decision=ACCEPTED, frames=10, size=(240, 320)):
        return [make_clip(noise_frames(frames, seed, size), decision=decision) for seed in range(n)]

    return make


def test_transitions_are_idempotent_and_keyed_by_clip_and_cid(tmp_path):
    outbox = Outbox(tmp_path / "o.sqlite")
    assert outbox.record("c1", "/clips/c1", "labeled") is True
    assert outbox.record("c1", "/elsewhere", "recorded") is False  # known clips keep their row
    assert outbox.decide("c1", True) and not outbox.decide("c1", False)
    outbox.set_cid("c1", "bafyA")
    outbox.set_cid("c1", "bafyB")  # the first CID stays
    assert outbox.get("c1").cid == "bafyA"
    assert not outbox.advance("c1", "bafyB", "accepted", "pinned")
    assert outbox.advance("c1", "bafyA", "accepted", "pinned")
    assert not outbox.advance("c1", "bafyA", "accepted", "pinned")  # again: nothing happens
    assert outbox.get("c1").state == "pinned"
    with pytest.raises(ValueError, match="not a step forward"):
        outbox.advance("c1", "bafyA", "pinned", "accepted")
    assert outbox.counts()["pinned"] == 1


def test_backoff_doubles_with_jitter_and_errors_are_kept_in_words(tmp_path):
    rng = random.Random(1)
    waits = [backoff(n, rng) for n in range(1, 12)]
    assert 2.5 <= waits[0] <= 5 and 5 <= waits[1] <= 10 and 10 <= waits[2] <= 20
    assert max(waits) <= BACKOFF_MAX_S
    outbox = Outbox(tmp_path / "o.sqlite")
    outbox.record("c1", "/clips/c1", "accepted")
    outbox.failed("c1", "IPFS daemon at /ip4/127.0.0.1/tcp/5001/http is not reachable (add): refused")
    entry = outbox.get("c1")
    assert entry.attempts == 1 and entry.next_try > time.time() and "not reachable" in entry.last_error
    assert outbox.due("accepted") == []
    assert outbox.retry() == 1 and [e.clip_id for e in outbox.due("accepted")] == ["c1"]
    outbox.failed("c1", "CID mismatch", retry=False)
    assert outbox.get("c1").next_try == NEVER and outbox.oldest_pending().clip_id == "c1"


def test_labeled_clips_on_disk_enter_the_outbox_once(tmp_path, clips):
    accepted, rejected = clips(2), clips(1, REJECTED)
    outbox = Outbox(tmp_path / "o.sqlite")
    assert enqueue_all(outbox, accepted + rejected) == 3
    assert enqueue_all(outbox, accepted + rejected) == 0
    counts = outbox.counts()
    assert counts["accepted"] == 2 and counts["rejected"] == 1
    assert outbox.get(rejected[0].name).reason == "rejected: no hands in 90% of frames"


class FlakyStore:
    """The real embedded store behind a fault injector: the given calls raise before the store is touched."""

    def __init__(self, store, faults):
        self.store, self.faults, self.name, self.calls = store, faults, "flaky", 0

    def add(self, path, expected=None):
        self.calls += 1
        fault = self.faults.get(self.calls)
        if fault:
            raise fault
        return self.store.add(path, expected)

    def is_pinned(self, cid):
        return self.store.is_pinned(cid)


def test_a_store_that_goes_away_and_a_full_disk_delay_clips_but_lose_none(tmp_path, clips):
    made = clips(4)
    outbox = Outbox(tmp_path / "o.sqlite")
    enqueue_all(outbox, made)
    store = EmbeddedStore(tmp_path / "blocks.sqlite")
    flaky = FlakyStore(
        store,
        {
            2: StoreUnavailable("IPFS daemon went away"),
            4: OSError(errno.ENOSPC, "No space left on device"),
            5: sqlite3.OperationalError("database or disk is full"),
        },
    )
    first = pin_due(outbox, flaky)
    # One pinned, then the store was gone: the round stops and that clip waits.
    assert [bool(r.error) for r in first] == [False, True]
    later = time.time() + BACKOFF_MAX_S * 2
    second = pin_due(outbox, flaky, now=later)
    assert any("No space left" in r.error for r in second)
    third = pin_due(outbox, flaky, now=later * 2)
    assert any("database or disk is full" in r.error for r in second + third)
    fourth = pin_due(outbox, flaky, now=later * 4)
    assert all(not r.error for r in fourth)
    assert outbox.counts()["pinned"] == 4
    for clip in made:
        entry = outbox.get(clip.name)
        assert entry.state == "pinned" and Cid.parse(entry.cid) == add_path(clip).cid and store.is_pinned(Cid.parse(entry.cid))
    assert len(store.blocks.pins()) == 4


def test_kill_9_at_random_points_then_restart_pins_every_clip_exactly_once(tmp_path, clips):
    made = clips(6, frames=20, size=(480, 640))  # noise does not compress: a few MB per clip
    data = made[0].parent.parent
    env = dict(os.environ, KNACK_DATA_DIR=str(data), XDG_CONFIG_HOME=str(tmp_path / "no-config"))
    env.pop("KNACK_CONFIG", None)
    rng = random.Random(7)
    # The kills fall inside the time one whole `knack pin` of these clips takes here (start-up included),
    # measured on a copy of the data: a fast host and a loaded CI host alike are killed mid-run.
    probe = tmp_path / "probe"
    shutil.copytree(data, probe)
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "knack", "pin"], check=True, env=dict(env, KNACK_DATA_DIR=str(probe)), capture_output=True)
    whole = time.monotonic() - t0
    kills = 0
    for _ in range(40):
        proc = subprocess.Popen([sys.executable, "-m", "knack", "pin"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        try:
            proc.wait(timeout=rng.uniform(0.3, 0.95) * whole)
            if proc.returncode == 0 and Outbox(data / "outbox.sqlite").counts()["accepted"] == 0:
                break
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
    else:
        pytest.fail("the clips were never all pinned")
    assert kills >= 1, "the loop must have killed the pinner at least once to prove anything"
    outbox = Outbox(data / "outbox.sqlite")
    assert outbox.counts()["pinned"] == len(made)
    store = EmbeddedStore(data / "ipfs" / "blocks.sqlite")
    pins = [cid for cid, _ in store.blocks.pins()]
    assert sorted(map(str, pins)) == sorted(str(add_path(c).cid) for c in made), "each clip pinned once, under its own CID"
    for cid in pins:
        assert sum(1 for _ in store.blocks.walk(cid)) > 0  # every block there and intact
    assert all(outbox.get(c.name).attempts == 0 for c in made)


def test_a_clip_recorded_before_its_label_moves_on_once_it_is_labeled(tmp_path, make_clip, device_key):
    import json

    from collector.bundle import write_manifest

    clip = make_clip(noise_frames(5, 0))
    outbox = Outbox(tmp_path / "o.sqlite")
    outbox.record(clip.name, clip, "recorded")
    assert enqueue_all(outbox, [clip]) == 0 and outbox.get(clip.name).state == "recorded"
    manifest = json.loads((clip / "manifest.json").read_text())
    write_manifest(clip, dict(manifest, decision=ACCEPTED), device_key)  # what `knack label` does
    assert enqueue_all(outbox, [clip]) == 1 and outbox.get(clip.name).state == "accepted"
    assert enqueue_all(outbox, [clip]) == 0


def test_cli_status_pin_retry_export_car_and_cid(tmp_path, clips):
    made = clips(2) + clips(1, REJECTED)
    data = made[0].parent.parent
    knack = knack_cli(data, tmp_path, timeout=120)

    out = knack("status")
    assert out.returncode == 0 and "accepted 2" in out.stdout and "rejected 1" in out.stdout and "Oldest pending:" in out.stdout
    out = knack("pin")
    assert out.returncode == 0 and out.stdout.count("pinned  ") == 2 and "2 pinned, 0 waiting" in out.stdout
    out = knack("status", "--json")
    import json

    status = json.loads(out.stdout)
    assert status["counts"]["pinned"] == 2 and status["oldest_pending"]["state"] == "pinned"  # next: the chain (issue 5)
    assert knack("retry").stdout.startswith("0 clip(s)")
    car = tmp_path / "clip.car"
    out = knack("export-car", made[0].name, "-o", str(car))
    root = str(add_path(made[0]).cid)
    assert out.returncode == 0 and root in out.stdout and car.stat().st_size > 0
    assert knack("cid", str(made[0])).stdout.strip() == root
    out = knack("cid", str(tmp_path / "nothing"))
    assert out.returncode == 2 and "is neither a file nor a directory" in out.stderr


def test_a_clip_signed_for_no_network_waits_then_is_resigned_for_it_before_it_is_pinned(tmp_path, clips, device_key):
    """A device that labeled offline, before it knew its network: the pinner's `prepare` defers the clip while
    the network is unknown, then re-signs it (EIP-712 for that chain and registry) and pins what it signed."""
    from collector.bundle import BundleFormatError, bind_to_network, verify_bundle
    from collector.identity import SigningDomain
    from storage.outbox.pinner import PinDeferred

    [clip, tampered] = clips(2)
    outbox = Outbox(tmp_path / "o.sqlite")
    enqueue_all(outbox, [clip])
    store = EmbeddedStore(tmp_path / "blocks.sqlite")
    network: list[SigningDomain] = []

    def prepare(path):
        if not network:
            raise PinDeferred("this device does not know its network yet")
        return bind_to_network(path, device_key.bind(network[0]))

    [waiting] = pin_due(outbox, store, prepare=prepare)
    assert waiting.cid is None and "does not know its network" in waiting.error and outbox.counts()["accepted"] == 1
    assert verify_bundle(clip).network is None
    network.append(SigningDomain(31337, "0x" + "ab" * 20))
    [pinned] = pin_due(outbox, store, now=time.time() + BACKOFF_MAX_S + 1, prepare=prepare)
    assert not pinned.error and outbox.counts()["pinned"] == 1
    assert verify_bundle(clip).ok and verify_bundle(clip).network == network[0]
    assert pinned.cid == str(add_path(clip).cid)  # what was pinned is the re-signed clip
    assert bind_to_network(clip, device_key.bind(network[0])) is False  # signed for it once
    with open(tampered / "video.mp4", "ab") as f:  # never signs over files it did not record
        f.write(b"x")
    with pytest.raises(BundleFormatError, match="does not verify"):
        bind_to_network(tampered, device_key.bind(network[0]))


def test_a_pinned_clip_is_never_relabeled_in_place_and_as_new_labels_a_copy(tmp_path, clips):
    [clip] = clips(1)
    data = clip.parent.parent
    knack = knack_cli(data, tmp_path, timeout=180, KNACK_DEVICE_PASSWORD="test-password")

    assert knack("pin").returncode == 0
    cid = str(add_path(clip).cid)
    before = {p.name: p.read_bytes() for p in clip.iterdir()}
    out = knack("label", str(clip))
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stdout + out.stderr
    assert f"clip {clip.name} is pinned as {cid}: labeling it again would change its CID" in out.stdout
    assert {p.name: p.read_bytes() for p in clip.iterdir()} == before and str(add_path(clip).cid) == cid
    out = knack("label", "--as-new", str(clip))
    assert out.returncode == 0, out.stdout + out.stderr
    [copy] = [c for c in clip.parent.iterdir() if c.name not in (clip.name,) and not c.name.startswith(".")]
    manifest = json.loads((copy / "manifest.json").read_text())
    assert manifest["parent"] == clip.name and manifest["clip_id"] == copy.name and manifest["decision"]
    assert {p.name: p.read_bytes() for p in clip.iterdir()} == before  # the original is untouched


def damage(path):
    path.write_bytes(b"this is not an SQLite database, a disk ate it" * 100)
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def test_rebuild_takes_states_from_the_clips_the_store_and_the_chain(tmp_path, clips):
    from storage.ledger.base import SubmittedBatch
    from storage.outbox.rebuild import rebuild

    on_chain, pinned, waiting = clips(3)
    [rejected] = clips(1, REJECTED)
    store = EmbeddedStore(tmp_path / "blocks.sqlite")
    store.add(pinned)
    store.add(on_chain)
    other = add_path(clips(1)[0]).cid  # someone else's clip in the same batch
    batch = SubmittedBatch(7, "0x" + "11" * 20, (other.digest, add_path(on_chain).cid.digest), "0x" + "22" * 20)
    path = tmp_path / "outbox.sqlite"
    Outbox(path).close()
    damage(path)
    with pytest.raises(Exception) as caught:
        Outbox(path)
    assert type(caught.value).__name__ == "OutboxDamaged" and "`knack outbox rebuild`" in str(caught.value)
    result = rebuild(path, [on_chain, pinned, waiting, rejected], store, [batch])
    assert [p.name for p in result.kept] == [p.name for p in tmp_path.glob("outbox.sqlite.damaged-*")] and result.kept
    box = result.outbox
    assert box.get(on_chain.name).state == "submitted" and box.chain_record(on_chain.name)["batch_id"] == 7
    assert box.chain_record(on_chain.name)["batch_index"] == 1 and box.get(on_chain.name).cid == str(add_path(on_chain).cid)
    assert box.get(pinned.name).state == "pinned" and box.get(pinned.name).cid == str(add_path(pinned).cid)
    assert box.get(waiting.name).state == "accepted" and box.get(rejected.name).state == "rejected"
    assert box.unsettled_batches() == [7]  # the next chain round reads its settlement
    # Pinning goes on from there, exactly once: the clip already pinned is not pinned again.
    assert [r.clip_id for r in pin_due(box, store)] == [waiting.name]


def test_a_damaged_outbox_is_one_line_and_knack_outbox_rebuild_mends_it(tmp_path, clips):
    made = clips(2) + clips(1, REJECTED)
    data = made[0].parent.parent
    knack = knack_cli(data, tmp_path, timeout=120)

    assert knack("pin").returncode == 0
    out = knack("outbox", "rebuild")
    assert out.returncode == 2 and "is readable: nothing to rebuild" in out.stderr
    damage(data / "outbox.sqlite")
    for command in (("status",), ("pin",)):
        out = knack(*command)
        assert out.returncode == 2 and "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert "is damaged" in out.stderr and "`knack outbox rebuild`" in out.stderr
    out = knack("outbox", "rebuild")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "kept the damaged file as" in out.stdout and "2 pinned" in out.stdout and "1 rejected" in out.stdout, out.stdout
    assert list(data.glob("outbox.sqlite.damaged-*"))
    out = knack("status", "--json")
    assert json.loads(out.stdout)["counts"]["pinned"] == 2

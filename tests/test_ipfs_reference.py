"""Byte-for-byte agreement with independent IPFS implementations: the npm `ipfs-unixfs-importer`
(the importer of js-ipfs and Helia, with kubo's parameters) and a real js-ipfs daemon on loopback,
driven through ipfshttpclient as a device would drive kubo."""

import time
from collections import Counter

import pytest

from storage.content.cid import Cid
from storage.content.ipfs import DaemonStore, EmbeddedStore
from storage.content.unixfs import CHUNK, add_path
from storage.outbox.db import Outbox
from storage.outbox.pinner import enqueue_all, pin_due
from tests.ipfs_node import IpfsDaemon, node_tools_missing, reference_cids
from tests.test_outbox import ACCEPTED, noise_frames

importer_missing = node_tools_missing(daemon=False)
daemon_missing = node_tools_missing(daemon=True)


def write(path, size, seed=0):
    """`size` bytes that differ per chunk (so no block repeats by accident)."""
    with open(path, "wb") as f:
        block = 0
        while size > 0:
            n = min(size, 1 << 20)
            f.write((seed.to_bytes(4, "big") + block.to_bytes(4, "big")) * (n // 8) + b"\x00" * (n % 8))
            size -= n
            block += 1
    return path


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    root = tmp_path_factory.mktemp("cases")
    made = {
        "0 B": write(root / "zero", 0),
        "1 B": write(root / "one", 1),
        "256 KiB - 1": write(root / "below", CHUNK - 1),
        "256 KiB": write(root / "exact", CHUNK),
        "256 KiB + 1": write(root / "above", CHUNK + 1),
        "10 MiB": write(root / "ten", 10 << 20, seed=1),
    }
    nested = root / "nested"
    (nested / "a" / "b").mkdir(parents=True)
    (nested / "empty-dir").mkdir()
    write(nested / "a" / "b" / "deep.bin", CHUNK * 2 + 5, seed=2)
    write(nested / "a" / "small.txt", 12, seed=3)
    write(nested / "top.bin", 0)
    made["nested directory"] = nested
    return made


@pytest.mark.skipif(importer_missing is not None, reason=importer_missing or "")
@pytest.mark.parametrize("case", ["0 B", "1 B", "256 KiB - 1", "256 KiB", "256 KiB + 1", "10 MiB", "nested directory"])
def test_every_block_agrees_with_the_js_importer(cases, case):
    path = cases[case]
    ours = []
    root = add_path(path, lambda cid, block: ours.append(str(cid)))
    reference = reference_cids(path)
    assert str(root.cid) == reference["root"]
    assert Counter(ours) == Counter(reference["blocks"]), "the same blocks (a block's CID is the hash of its bytes)"
    assert len(ours) == reference["count"]


@pytest.mark.skipif(importer_missing is not None, reason=importer_missing or "")
def test_a_file_deeper_than_one_level_of_174_links_agrees(tmp_path):
    path = write(tmp_path / "deep", CHUNK * 175 + 3, seed=4)  # 176 leaves: two levels of nodes
    ours = []
    root = add_path(path, lambda cid, block: ours.append(str(cid)))
    reference = reference_cids(path)
    assert str(root.cid) == reference["root"] and Counter(ours) == Counter(reference["blocks"])


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    if daemon_missing:
        pytest.skip(daemon_missing)
    with IpfsDaemon(tmp_path_factory.mktemp("ipfs-repo")) as node:
        yield node


@pytest.mark.parametrize("case", ["0 B", "1 B", "256 KiB - 1", "256 KiB + 1", "10 MiB", "nested directory"])
def test_a_real_daemon_computes_and_pins_the_same_cid(daemon, cases, case):
    store = DaemonStore(daemon.api)
    ours = add_path(cases[case]).cid
    assert store.add(cases[case], ours) == ours  # add raises if the daemon's CID differs
    assert store.is_pinned(ours)


def test_an_exported_car_imports_into_the_daemon_under_the_same_root(daemon, cases, tmp_path):
    embedded = EmbeddedStore(tmp_path / "blocks.sqlite")
    root = embedded.add(cases["nested directory"])
    car = tmp_path / "clip.car"
    with open(car, "wb") as f:
        embedded.export_car(root, f)
    daemon.dag_import(car)
    assert DaemonStore(daemon.api).is_pinned(root)


def test_a_daemon_that_goes_away_mid_upload_loses_and_duplicates_nothing(daemon, make_clip, tmp_path):
    clips = [make_clip(noise_frames(30, seed, (480, 640)), decision=ACCEPTED) for seed in range(4)]
    outbox = Outbox(tmp_path / "outbox.sqlite")
    enqueue_all(outbox, clips)
    store = DaemonStore(daemon.api, timeout=10)
    # Two clips go up; the daemon is stopped (SIGTERM, for real) while the third is being uploaded.
    first = pin_due(outbox, _Stopping(store, daemon, after=2))
    assert sum(not r.error for r in first) == 2 and first[-1].error
    assert "IPFS daemon at" in first[-1].error
    assert outbox.counts()["pinned"] == 2 and outbox.counts()["accepted"] == 2
    daemon.start()
    rest = pin_due(outbox, store, now=time.time() + 7200)
    assert all(not r.error for r in rest) and outbox.counts()["pinned"] == 4
    for clip in clips:
        cid = Cid.parse(outbox.get(clip.name).cid)
        assert cid == add_path(clip).cid and store.is_pinned(cid)


class _Stopping:
    """The daemon store; after `after` adds, the daemon is stopped a moment into the next upload."""

    def __init__(self, store, daemon, after):
        self.store, self.daemon, self.after, self.name = store, daemon, after, "stopping"

    def add(self, path, expected=None):
        if self.after == 0:
            import threading

            threading.Timer(0.05, self.daemon.stop).start()
        self.after -= 1
        return self.store.add(path, expected)

    def is_pinned(self, cid):
        return self.store.is_pinned(cid)

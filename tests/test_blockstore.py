"""The embedded block store: put/get/has, pins, garbage collection, hash-checked reads, CAR export."""

import io
import sqlite3

import pytest

from storage.content.blockstore import BlockError, BlockStore
from storage.content.car import read_car
from storage.content.cid import RAW, Cid
from storage.content.ipfs import CidMismatch, EmbeddedStore
from storage.content.unixfs import CHUNK, add_path


@pytest.fixture
def bundle(tmp_path):
    clip = tmp_path / "clip"
    clip.mkdir()
    (clip / "video.mp4").write_bytes(bytes(range(256)) * (CHUNK // 256 * 3 + 7))  # 3 chunks and a bit
    (clip / "manifest.json").write_text('{"clip_id": "x"}')
    (clip / "sub").mkdir()
    (clip / "sub" / "frames.parquet").write_bytes(b"frames")
    return clip


def test_put_get_has_and_refusal_of_wrong_bytes(tmp_path):
    store = BlockStore(tmp_path / "b.sqlite")
    cid = Cid.of(RAW, b"block")
    assert not store.has(cid)
    store.put(cid, b"block")
    store.put(cid, b"block")  # idempotent
    assert store.has(cid) and store.get(cid) == b"block" and store.count() == 1
    with pytest.raises(BlockError, match="do not hash to its CID"):
        store.put(cid, b"other")
    with pytest.raises(BlockError, match="is not in the store"):
        store.get(Cid.of(RAW, b"missing"))


def test_a_flipped_bit_on_disk_is_detected_and_never_served(tmp_path, bundle):
    store = EmbeddedStore(tmp_path / "b.sqlite")
    root = store.add(bundle)
    leaf = Cid.of(RAW, b"frames")
    db = sqlite3.connect(tmp_path / "b.sqlite")
    db.execute("UPDATE blocks SET data = ? WHERE cid = ?", (b"fraMes", leaf.bytes))
    db.commit()
    db.close()
    with pytest.raises(BlockError, match="is corrupt on disk"):
        store.blocks.get(leaf)
    with pytest.raises(BlockError, match="is corrupt on disk"):
        store.export_car(root, io.BytesIO())


def test_add_pins_the_kubo_cid_and_gc_keeps_only_pinned_blocks(tmp_path, bundle):
    store = EmbeddedStore(tmp_path / "b.sqlite")
    root = store.add(bundle)
    assert root == add_path(bundle).cid
    assert store.is_pinned(root)
    stray = Cid.of(RAW, b"not pinned")
    store.blocks.put(stray, b"not pinned")
    assert store.blocks.gc() == 1 and not store.blocks.has(stray)
    blocks = store.blocks.count()
    assert blocks == len(list(store.blocks.walk(root)))
    store.blocks.unpin(root)
    assert store.blocks.gc() == blocks and store.blocks.count() == 0


def test_a_clip_changed_after_acceptance_is_not_pinned_under_its_old_cid(tmp_path, bundle):
    store = EmbeddedStore(tmp_path / "b.sqlite")
    before = add_path(bundle).cid
    (bundle / "manifest.json").write_text('{"clip_id": "y"}')
    with pytest.raises(CidMismatch, match="its files changed after it was accepted"):
        store.add(bundle, expected=before)
    assert not store.is_pinned(before)


def test_car_export_holds_every_block_once_under_the_root(tmp_path, bundle):
    store = EmbeddedStore(tmp_path / "b.sqlite")
    root = store.add(bundle)
    path = tmp_path / "clip.car"
    with open(path, "wb") as f:
        count = store.export_car(root, f)
    roots, blocks = read_car(path)
    blocks = list(blocks)
    assert roots == [root] and len(blocks) == count == len({c for c, _ in blocks})
    assert blocks[0][0] == root
    # The CAR alone is enough to rebuild the store.
    other = BlockStore(tmp_path / "other.sqlite")
    other.put_many(blocks)
    other.pin(root)
    assert [c for c, _ in other.walk(root)] == [c for c, _ in blocks]

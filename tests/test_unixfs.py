"""The CID builder against published vectors and against the DAG shape kubo makes."""

import hashlib
import os

import pytest

from storage.content.cid import DAG_PB, RAW, Cid, CidError
from storage.content.unixfs import CHUNK, MAX_LINKS, UnixfsError, add_path, add_stream, decode_links

# Published CIDs: kubo and js-ipfs print these for `ipfs add --cid-version=1` (raw leaves) and for an
# empty directory (also in shared/INFRA.md, seen from a real daemon).
EMPTY_FILE = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
HELLO_WORLD = "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"
EMPTY_DIR = "bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354"


def test_published_vectors(tmp_path):
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "hello").write_bytes(b"hello world\n")
    (tmp_path / "dir").mkdir()
    assert str(add_path(tmp_path / "empty").cid) == EMPTY_FILE
    assert str(add_path(tmp_path / "hello").cid) == HELLO_WORLD
    assert str(add_path(tmp_path / "dir").cid) == EMPTY_DIR


def test_cid_text_round_trips_in_base32_and_base58():
    cid = Cid.parse(HELLO_WORLD)
    assert cid.codec == RAW and str(cid) == HELLO_WORLD
    assert Cid.from_bytes(cid.bytes) == cid
    # js-ipfs prints CIDv1 in base58btc unless asked for base32: the same CID must come back.
    alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
    value, text = int.from_bytes(cid.bytes, "big"), ""
    while value:
        value, digit = divmod(value, 58)
        text = alphabet[digit] + text
    assert Cid.parse("z" + text) == cid
    with pytest.raises(CidError, match="not a CIDv1"):
        Cid.parse("QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o")


def chunks(count, size=CHUNK):
    for i in range(count):
        yield bytes([i % 251]) * size


@pytest.mark.parametrize("leaves, depth, root_links", [(1, 0, 0), (2, 1, 2), (174, 1, 174), (175, 2, 2), (174 * 2 + 1, 2, 3)])
def test_the_tree_is_kubos_balanced_layout(leaves, depth, root_links):
    blocks = {}
    root = add_stream(chunks(leaves), lambda c, b: blocks.__setitem__(c, b))
    assert root.size == leaves * CHUNK
    if depth == 0:
        assert root.cid.codec == RAW
        return
    assert root.cid.codec == DAG_PB
    links = decode_links(blocks[root.cid])
    assert len(links) == root_links
    # Every leaf sits at the same depth, and every node but the last on a level is full.
    level, d = [root.cid], 0
    while level[0].codec == DAG_PB:
        children = [decode_links(blocks[c]) for c in level]
        assert all(len(c) == MAX_LINKS for c in children[:-1]) and 0 < len(children[-1]) <= MAX_LINKS
        level = [c for cs in children for c in cs]
        d += 1
    assert d == depth and len(level) == leaves and all(c.codec == RAW for c in level)


def test_a_large_file_streams_with_flat_memory(tmp_path):
    import tracemalloc

    path = tmp_path / "big"
    with open(path, "wb") as f:
        for i in range(64):  # 16 MiB
            f.write(hashlib.sha256(bytes([i])).digest() * (CHUNK // 32))
    tracemalloc.start()
    root = add_path(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert root.size == 64 * CHUNK
    assert peak < 4 * CHUNK, f"peak {peak} bytes: the file must not be held in memory"


def test_directories_sort_entries_and_skip_hidden_files_like_ipfs_add(tmp_path):
    (tmp_path / "b.txt").write_bytes(b"b")
    (tmp_path / "a.txt").write_bytes(b"a")
    (tmp_path / ".hidden").write_bytes(b"secret")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c").write_bytes(b"c")
    blocks = {}
    root = add_path(tmp_path, lambda c, b: blocks.__setitem__(c, b))
    names = [name for name in (b"a.txt", b"b.txt", b"sub") if name in blocks[root.cid]]
    assert names == [b"a.txt", b"b.txt", b"sub"]
    assert b".hidden" not in blocks[root.cid]
    assert root.cid != add_path(tmp_path, hidden=True).cid
    assert root.tsize == sum(len(b) for b in blocks.values())


def test_symlinks_are_refused_with_the_path(tmp_path):
    (tmp_path / "real").write_bytes(b"x")
    os.symlink(tmp_path / "real", tmp_path / "link")
    with pytest.raises(UnixfsError, match="link is a symbolic link"):
        add_path(tmp_path)

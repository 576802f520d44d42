"""Files and directories as a UnixFS DAG, exactly as kubo's `ipfs add -r --cid-version=1` builds it:
sha2-256, raw leaves of 256 KiB fixed-size chunks, a balanced tree of dag-pb nodes with at most 174
links each, directories as dag-pb nodes whose links are sorted by name. Pure Python, streaming: a
file is read one chunk at a time and at most one pending link list per tree level is kept, so
memory stays flat for a file of any size.

Every block is handed to a sink as it is made (a block store, a CAR writer, or nothing when only
the CID is wanted)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from storage.content.cid import DAG_PB, RAW, Cid, varint

CHUNK = 256 * 1024
MAX_LINKS = 174
# kubo switches a directory to a HAMT shard when its node would exceed this; clip bundles never do.
SHARD_THRESHOLD = 256 * 1024

Sink = Callable[[Cid, bytes], None]


def discard(cid: Cid, block: bytes) -> None:
    """The sink of `knack cid`: blocks are hashed, not kept."""


@dataclass(frozen=True)
class Link:
    cid: Cid
    name: str
    tsize: int  # the block's size plus the tsizes of everything below it (dag-pb "Tsize")
    size: int = 0  # file bytes below this link (UnixFS blocksizes), 0 for directories


class UnixfsError(ValueError):
    """A path that cannot be added the way kubo adds it."""


# --- protobuf, only what dag-pb and UnixFS need ----------------------------------------------------


def _field(number: int, wire: int) -> bytes:
    return varint(number << 3 | wire)


def _bytes_field(number: int, value: bytes) -> bytes:
    return _field(number, 2) + varint(len(value)) + value


def _uint_field(number: int, value: int) -> bytes:
    return _field(number, 0) + varint(value)


def unixfs_data(kind: int, filesize: int | None = None, blocksizes: tuple[int, ...] = ()) -> bytes:
    """UnixFS `Data` message: Type (1), filesize (3), blocksizes (4, unpacked as proto2 writes them)."""
    out = _uint_field(1, kind)
    if filesize is not None:
        out += _uint_field(3, filesize)
    return out + b"".join(_uint_field(4, size) for size in blocksizes)


def dag_pb_node(links: list[Link], data: bytes) -> bytes:
    """A PBNode in dag-pb's canonical form: links (field 2) first, then data (field 1). Each PBLink
    carries Hash, Name (present even when empty, as kubo writes it) and Tsize."""
    out = bytearray()
    for link in links:
        name = link.name.encode("utf-8")
        cid = link.cid.bytes
        body = b"\x0a" + varint(len(cid)) + cid + b"\x12" + varint(len(name)) + name + b"\x18" + varint(link.tsize)
        out += b"\x12" + varint(len(body)) + body
    out += _bytes_field(1, data)
    return bytes(out)


FILE, DIRECTORY = 2, 1


def named_links(block: bytes) -> list[tuple[str, Cid]]:
    """The (name, CID) links of a dag-pb block, in order."""
    from storage.content.cid import read_varint

    links, pos = [], 0
    while pos < len(block):
        key, pos = read_varint(block, pos)
        if key & 7 != 2:
            raise UnixfsError("not a dag-pb block")
        length, pos = read_varint(block, pos)
        if key >> 3 == 2:
            inner, end, cid, name = block[pos : pos + length], 0, None, ""
            while end < len(inner):
                k, end = read_varint(inner, end)
                if k & 7 == 2:
                    n, end = read_varint(inner, end)
                    if k >> 3 == 1:
                        cid = Cid.from_bytes(inner[end : end + n])
                    elif k >> 3 == 2:
                        name = inner[end : end + n].decode("utf-8")
                    end += n
                else:
                    _, end = read_varint(inner, end)
            if cid is None:
                raise UnixfsError("a dag-pb link without a hash")
            links.append((name, cid))
        pos += length
    return links


def decode_links(block: bytes) -> list[Cid]:
    """The CIDs a dag-pb block links to (for walking a DAG: export, garbage collection)."""
    return [cid for _, cid in named_links(block)]


def read_file(get: Callable[[Cid], bytes], cid: Cid) -> Iterator[bytes]:
    """A file's bytes from its DAG, leaf by leaf; `get` returns a block (hash-checked by the store)."""
    if cid.codec == RAW:
        yield get(cid)
        return
    for child in decode_links(get(cid)):
        yield from read_file(get, child)


def read_directory(get: Callable[[Cid], bytes], cid: Cid) -> dict[str, Cid]:
    if cid.codec != DAG_PB:
        raise UnixfsError(f"{cid} is a file, not a directory")
    return dict(named_links(get(cid)))


# --- files -------------------------------------------------------------------------------------------


def _parent(links: list[Link], sink: Sink) -> Link:
    """An internal file node over `links`."""
    size = sum(link.size for link in links)
    block = dag_pb_node(links, unixfs_data(FILE, size, tuple(link.size for link in links)))
    cid = Cid.of(DAG_PB, block)
    sink(cid, block)
    return Link(cid, "", len(block) + sum(link.tsize for link in links), size)


def add_stream(read_chunks: Iterator[bytes], sink: Sink) -> Link:
    """A file from its chunks: raw leaves, grouped bottom-up into nodes of at most 174 links, which
    is the tree kubo's balanced layout builds (every leaf at the same depth, filled left to right)."""
    levels: list[list[Link]] = [[]]
    for chunk in read_chunks:
        cid = Cid.of(RAW, chunk)
        sink(cid, chunk)
        levels[0].append(Link(cid, "", len(chunk), len(chunk)))
        level = 0
        # A full group closes into its parent at once; if nothing follows, that parent is the root.
        while len(levels[level]) == MAX_LINKS:
            node = _parent(levels[level], sink)
            levels[level] = []
            if level + 1 == len(levels):
                levels.append([])
            levels[level + 1].append(node)
            level += 1
    if not levels[0] and len(levels) == 1:
        # An empty file is one empty raw block.
        cid = Cid.of(RAW, b"")
        sink(cid, b"")
        return Link(cid, "", 0, 0)
    level = 0
    while True:
        links = levels[level]
        above = any(levels[up] for up in range(level + 1, len(levels)))
        if not above and len(links) == 1:
            return links[0]
        if links:
            node = _parent(links, sink)
            if level + 1 == len(levels):
                levels.append([])
            levels[level + 1].append(node)
        level += 1


def file_chunks(path: Path, chunk: int = CHUNK) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while True:
            data = f.read(chunk)
            if not data:
                return
            # A short read before the end (a pipe, a network file system) must not shift chunk bounds.
            while len(data) < chunk:
                more = f.read(chunk - len(data))
                if not more:
                    break
                data += more
            yield data
            if len(data) < chunk:
                return


def add_file(path: str | Path, sink: Sink = discard) -> Link:
    # Unbuffered: one read() is one system call, so a small file costs an open, an fstat and a read.
    with open(path, "rb", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        if size < CHUNK:
            first = f.read(CHUNK)
            if len(first) == size:
                # One chunk (every file of a clip but the video): the raw leaf is the file, no tree.
                cid = Cid.of(RAW, first)
                sink(cid, first)
                return Link(cid, "", size, size)
    return add_stream(file_chunks(path), sink)


# --- directories -------------------------------------------------------------------------------------


def add_directory(path: Path, sink: Sink = discard, hidden: bool = False) -> Link:
    """A directory and everything below it; entries named as on disk, sorted bytewise like kubo's.
    Names starting with '.' are left out unless `hidden`, as `ipfs add -r` does without --hidden."""
    links = []
    for entry in sorted(os.scandir(path), key=lambda e: e.name.encode("utf-8")):
        if entry.name.startswith(".") and not hidden:
            continue
        if entry.is_symlink():
            raise UnixfsError(f"{entry.path} is a symbolic link; clip bundles hold only regular files and directories")
        child = add_directory(Path(entry.path), sink, hidden) if entry.is_dir() else add_file(entry.path, sink)
        links.append(Link(child.cid, entry.name, child.tsize, child.size))
    block = dag_pb_node(links, unixfs_data(DIRECTORY))
    if len(block) > SHARD_THRESHOLD:
        raise UnixfsError(f"{path} has {len(links)} entries: kubo would store it as a HAMT-sharded directory, which this builder does not make")
    cid = Cid.of(DAG_PB, block)
    sink(cid, block)
    return Link(cid, "", len(block) + sum(link.tsize for link in links), sum(link.size for link in links))


def add_path(path: str | Path, sink: Sink = discard, hidden: bool = False) -> Link:
    """The root of `ipfs add -r --cid-version=1 PATH`: a file's own CID, or the directory's."""
    path = Path(path)
    if path.is_dir():
        return add_directory(path, sink, hidden)
    if path.is_file():
        return add_file(path, sink)
    raise UnixfsError(f"{path} is neither a file nor a directory")

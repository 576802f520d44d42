"""CARv1 files: a DAG's blocks in one file that any IPFS node imports (`ipfs dag import`) and pinning
services accept. Header: a varint length and dag-cbor {"roots": [CID], "version": 1}; then per block a
varint length, the binary CID and the bytes."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from storage.content.cid import Cid, read_varint, varint


class CarError(ValueError):
    """A file that is not a CARv1 this device can read."""


def _cbor_head(major: int, value: int) -> bytes:
    if value < 24:
        return bytes([major << 5 | value])
    for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if value < 1 << (8 * size):
            return bytes([major << 5 | info]) + value.to_bytes(size, "big")
    raise ValueError("too large for CBOR")


def header(roots: list[Cid]) -> bytes:
    """dag-cbor of {"roots": [...], "version": 1}: keys in dag-cbor order (shorter first), CIDs as tag 42
    over a zero byte and the binary CID."""
    body = _cbor_head(5, 2)
    body += _cbor_head(3, 5) + b"roots" + _cbor_head(4, len(roots))
    for cid in roots:
        raw = b"\x00" + cid.bytes
        body += _cbor_head(6, 42) + _cbor_head(2, len(raw)) + raw
    body += _cbor_head(3, 7) + b"version" + _cbor_head(0, 1)
    return body


def write_car(out: BinaryIO, root: Cid, blocks: Iterable[tuple[Cid, bytes]]) -> int:
    """Writes the CAR; returns the number of blocks."""
    head = header([root])
    out.write(varint(len(head)) + head)
    count = 0
    for cid, block in blocks:
        raw = cid.bytes
        out.write(varint(len(raw) + len(block)) + raw + block)
        count += 1
    return count


def read_car(path: Path) -> tuple[list[Cid], Iterator[tuple[Cid, bytes]]]:
    """The roots and the blocks of a CARv1 (each block's hash is checked)."""
    data = Path(path).read_bytes()
    length, pos = read_varint(data, 0)
    head = data[pos : pos + length]
    pos += length
    if b"version" not in head or b"roots" not in head:
        raise CarError(f"{path} has no CARv1 header")
    roots, i = [], 0
    marker = bytes([0xD8, 42])  # tag 42
    while (i := head.find(marker, i)) != -1:
        n, start = _cbor_len(head, i + 2)
        roots.append(Cid.from_bytes(head[start + 1 : start + n]))
        i = start + n

    def blocks() -> Iterator[tuple[Cid, bytes]]:
        p = pos
        while p < len(data):
            size, p = read_varint(data, p)
            cid, start = Cid.read(data, p)
            block = data[start : p + size]
            if not cid.matches(block):
                raise CarError(f"{path}: block {cid} does not match its hash")
            yield cid, block
            p += size

    return roots, blocks()


def _cbor_len(data: bytes, pos: int) -> tuple[int, int]:
    info = data[pos] & 0x1F
    if info < 24:
        return info, pos + 1
    size = {24: 1, 25: 2, 26: 4, 27: 8}[info]
    return int.from_bytes(data[pos + 1 : pos + 1 + size], "big"), pos + 1 + size

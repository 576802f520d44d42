"""How settleBatch's arguments are packed (the registry decodes the same): the accepted flags as
little-endian 256-bit words, one big-endian uint16 quality (basis points) per accepted clip."""

from __future__ import annotations


def bitmap(accepted: list[bool]) -> list[int]:
    words = [0] * ((len(accepted) + 255) // 256)
    for i, ok in enumerate(accepted):
        if ok:
            words[i >> 8] |= 1 << (i & 255)
    return words


def bitmap_bits(words: list[int], count: int) -> list[bool]:
    return [bool(words[i >> 8] >> (i & 255) & 1) if i >> 8 < len(words) else False for i in range(count)]


def pack_qualities(values) -> bytes:
    return b"".join(int(q).to_bytes(2, "big") for q in values)


def unpack_qualities(data: bytes) -> list[int]:
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]

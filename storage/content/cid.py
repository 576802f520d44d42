"""Content identifiers (CIDv1) as IPFS writes them: multicodec + sha2-256 multihash, base32 text."""

from __future__ import annotations

import base64
import functools
import hashlib
from dataclasses import dataclass

RAW = 0x55
DAG_PB = 0x70
SHA2_256 = 0x12
_CODECS = {RAW: "raw", DAG_PB: "dag-pb"}


class CidError(ValueError):
    """Text or bytes that are not a CID this device produces (CIDv1, sha2-256)."""


def varint(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def read_varint(data: bytes, pos: int = 0) -> tuple[int, int]:
    """(value, position after it)."""
    value = shift = 0
    while True:
        if pos >= len(data):
            raise CidError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise CidError("varint too long")


@dataclass(frozen=True)
class Cid:
    codec: int
    digest: bytes  # the sha2-256 digest of the block

    @classmethod
    def of(cls, codec: int, block: bytes) -> Cid:
        return cls(codec, hashlib.sha256(block).digest())

    @functools.cached_property
    def bytes(self) -> bytes:
        return b"\x01" + varint(self.codec) + b"\x12\x20" + self.digest

    def __str__(self) -> str:
        return "b" + base64.b32encode(self.bytes).decode("ascii").lower().rstrip("=")

    @property
    def codec_name(self) -> str:
        return _CODECS.get(self.codec, hex(self.codec))

    @classmethod
    def from_bytes(cls, data: bytes) -> Cid:
        cid, end = cls.read(data, 0)
        if end != len(data):
            raise CidError(f"{len(data) - end} extra bytes after the CID")
        return cid

    @classmethod
    def read(cls, data: bytes, pos: int) -> tuple[Cid, int]:
        """A binary CIDv1 starting at `pos` in `data`, and the position after it."""
        version, pos = read_varint(data, pos)
        if version != 1:
            raise CidError(f"CID version {version}: only CIDv1 is used here")
        codec, pos = read_varint(data, pos)
        code, pos = read_varint(data, pos)
        length, pos = read_varint(data, pos)
        if code != SHA2_256 or length != 32 or pos + 32 > len(data):
            raise CidError("the CID's multihash is not a complete sha2-256 digest")
        return cls(codec, bytes(data[pos : pos + 32])), pos + 32

    @classmethod
    def parse(cls, text: str) -> Cid:
        """A CIDv1 in base32 ('b…', what kubo prints) or base58btc ('z…', what js-ipfs prints by default)."""
        text = text.strip()
        if text.startswith("z"):
            return cls.from_bytes(_b58decode(text[1:]))
        if not text.startswith("b"):
            raise CidError(f"{text!r} is not a CIDv1 in base32 or base58btc (they start with 'b', e.g. bafy…, or 'z')")
        body = text[1:].upper()
        try:
            data = base64.b32decode(body + "=" * (-len(body) % 8))
        except ValueError as exc:
            raise CidError(f"{text!r} is not valid base32: {exc}") from None
        return cls.from_bytes(data)

    def matches(self, block: bytes) -> bool:
        return hashlib.sha256(block).digest() == self.digest


_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def _b58decode(text: str) -> bytes:
    value = 0
    for char in text:
        index = _B58.find(char)
        if index < 0:
            raise CidError(f"{char!r} is not a base58btc character")
        value = value * 58 + index
    body = value.to_bytes((value.bit_length() + 7) // 8, "big") if value else b""
    return b"\x00" * (len(text) - len(text.lstrip("1"))) + body

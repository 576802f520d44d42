"""How the registry's arguments are packed (the contract decodes the same): settleBatch's accepted flags as
little-endian 256-bit words, one big-endian uint16 quality (basis points) per accepted clip; the EIP-712
struct that registerDevice checks both signatures over."""

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


REGISTER_DEVICE_TYPE = b"RegisterDevice(address device,address contributor,uint256 nonce,uint256 deadline)"


def _address_word(address: str) -> bytes:
    raw = bytes.fromhex(str(address).removeprefix("0x"))
    if len(raw) != 20:
        raise ValueError(f"{address!r} is not an EVM address")
    return raw.rjust(32, b"\0")


def registration_struct_hash(device: str, contributor: str, nonce: int, deadline: int) -> bytes:
    """hashStruct(RegisterDevice) of ClipRegistry.registerDevice: what device and contributor both sign,
    inside the registry's EIP-712 domain (collector.identity.SigningDomain.hash)."""
    from eth_hash.auto import keccak

    return keccak(
        keccak(REGISTER_DEVICE_TYPE) + _address_word(device) + _address_word(contributor) + int(nonce).to_bytes(32, "big") + int(deadline).to_bytes(32, "big")
    )

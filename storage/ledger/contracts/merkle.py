"""The Merkle tree of a ClipRegistry batch, in pure Python (mirrors ClipRegistry._merkleRoot / verify):

    leaf_i = keccak256(uint256(i) as 32 big-endian bytes || digest_i)
    parent = keccak256(min(a, b) || max(a, b))      (OpenZeppelin's commutative hash)
    an odd node at the end of a level is promoted unchanged.

A proof lists the sibling of each level where there is one (levels where the node is promoted add
nothing), so OpenZeppelin's MerkleProof.verify(proof, root, leaf) accepts it."""

from __future__ import annotations

from collections.abc import Sequence

from eth_hash.auto import keccak as keccak256  # eth-hash: a dependency of eth-account and web3

MAX_BATCH = 256


def leaf(index: int, digest: bytes) -> bytes:
    if len(digest) != 32:
        raise ValueError("a digest is 32 bytes")
    return keccak256(index.to_bytes(32, "big") + digest)


def hash_pair(a: bytes, b: bytes) -> bytes:
    return keccak256(a + b if a <= b else b + a)


def _levels(digests: Sequence[bytes]) -> list[list[bytes]]:
    if not 1 <= len(digests) <= MAX_BATCH:
        raise ValueError(f"a batch has 1..{MAX_BATCH} digests, not {len(digests)}")
    level = [leaf(i, d) for i, d in enumerate(digests)]
    levels = [level]
    while len(level) > 1:
        nxt = [hash_pair(level[j], level[j + 1]) for j in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        levels.append(nxt)
        level = nxt
    return levels


def root(digests: Sequence[bytes]) -> bytes:
    """The batch's Merkle root, as ClipRegistry.submitBatch stores it."""
    return _levels(digests)[-1][0]


def proof(digests: Sequence[bytes], index: int) -> list[bytes]:
    """The proof that digests[index] is clip `index` of the batch."""
    if not 0 <= index < len(digests):
        raise IndexError(index)
    out = []
    for level in _levels(digests)[:-1]:
        sibling = index ^ 1
        if sibling < len(level):
            out.append(level[sibling])
        index //= 2
    return out


def verify(root_: bytes, index: int, digest: bytes, proof_: Sequence[bytes]) -> bool:
    """What ClipRegistry.verify answers for a batch with this root (given index < the batch's count)."""
    h = leaf(index, digest)
    for p in proof_:
        h = hash_pair(h, p)
    return h == root_

"""Proof that a clip is what its contributor was paid for, for anyone who takes clips off the network (a lab
building a dataset): the clip's CID is in a settled batch by a Merkle proof against the root the registry
stores, its bytes hash back to that CID, its manifest is signed for this network by the device that submitted
the batch, and every file matches the manifest.

`paid_clips` reads the chain's side once (the driver of a dataset build); `verify_paid_clip` checks one clip's
content and runs wherever the bytes are fetched (a worker). Nothing here trusts the store or the bundle: a
clip that fails any check raises ProvenanceError with the reason, and the caller leaves it out."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from collector.bundle import MANIFEST, parse_manifest, verify_bundle
from collector.identity import SigningDomain
from storage.content.cid import DAG_PB, Cid
from storage.content.unixfs import add_path
from storage.ledger.base import Ledger
from storage.ledger.contracts import merkle
from storage.validator.fetch import ClipFormatError, Limits, fetch_clip


class ProvenanceError(Exception):
    """A clip that cannot be shown to be what was paid, in one sentence."""


@dataclass(frozen=True)
class PaidClip:
    """One accepted clip as the chain records it, with the proof of its place in its batch."""

    cid: str
    digest: str  # hex of the CID's sha2-256 digest, what the registry holds
    batch_id: int
    index: int  # position in the batch
    contributor: str
    device: str
    quality_bps: int  # the validator's quality, paid on
    root: str  # hex of the batch's Merkle root, read from the registry's storage
    proof: tuple[str, ...]  # hex sibling hashes, leaf to root
    settled_block: int
    settle_tx: str

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> PaidClip:
        data = json.loads(text)
        data["proof"] = tuple(data["proof"])
        return cls(**data)


def paid_clips(ledger: Ledger, contributor: str | None = None) -> list[PaidClip]:
    """Every clip accepted on chain (of `contributor`, or of everyone), in settlement order. Each proof is
    built from the batch's submitted digests, checked against the root in the registry's storage, and checked
    again by the registry's own `verify`: a batch whose events and storage disagree yields no clip."""
    out = []
    for batch, settlement in ledger.settled_batches(contributor):
        if len(batch.digests) != len(settlement.accepted):
            continue  # events that do not pair up are not a record anyone was paid by
        root = bytes(ledger.batch_root(batch.batch_id))
        qualities = iter(settlement.qualities_bps)
        for index, (digest, accepted) in enumerate(zip(batch.digests, settlement.accepted, strict=True)):
            if not accepted:
                continue
            quality = next(qualities, 0)
            proof = merkle.proof(batch.digests, index)
            if not merkle.verify(root, index, digest, proof) or not ledger.verify_inclusion(batch.batch_id, index, digest, proof):
                continue
            out.append(
                PaidClip(
                    cid=str(Cid(DAG_PB, bytes(digest))),
                    digest=bytes(digest).hex(),
                    batch_id=batch.batch_id,
                    index=index,
                    contributor=settlement.contributor,
                    device=batch.device or settlement.device,
                    quality_bps=int(quality),
                    root=root.hex(),
                    proof=tuple(p.hex() for p in proof),
                    settled_block=settlement.block,
                    settle_tx=settlement.tx,
                )
            )
    return out


def check_proof(clip: PaidClip) -> None:
    """The clip's Merkle proof against its batch root, recomputed here (the root is the registry's)."""
    digest = bytes.fromhex(clip.digest)
    if Cid(DAG_PB, digest) != Cid.parse(clip.cid):
        raise ProvenanceError(f"the CID {clip.cid} does not carry the digest the registry holds")
    if not merkle.verify(bytes.fromhex(clip.root), clip.index, digest, [bytes.fromhex(p) for p in clip.proof]):
        raise ProvenanceError(f"the Merkle proof of clip {clip.index} of batch {clip.batch_id} does not lead to the batch's root on chain")


def verify_paid_clip(get: Callable[[Cid], bytes], clip: PaidClip, network: SigningDomain, scratch: Path, limits: Limits | None = None) -> dict:
    """Fetches the clip into `scratch` (an empty directory) and checks it end to end; returns its manifest.
    Raises ProvenanceError with the reason for anything that does not hold."""
    check_proof(clip)
    cid = Cid.parse(clip.cid)
    try:
        fetch_clip(get, cid, scratch, limits or Limits())
    except ClipFormatError as exc:
        raise ProvenanceError(f"not a clip bundle: {exc}") from None
    recomputed = add_path(scratch).cid
    if recomputed != cid:
        raise ProvenanceError(f"the fetched bytes hash to {recomputed}, not to the CID paid for")
    return check_bundle(scratch, network, device=clip.device)


def check_bundle(directory: Path, network: SigningDomain | None, device: str | None = None) -> dict:
    """Every file against the manifest and the device signature (for `network` and by `device` when given);
    returns the manifest."""
    result = verify_bundle(directory)
    if not result.ok:
        raise ProvenanceError("; ".join(result.problems)[:500])
    if network is not None and (result.network is None or not result.network.matches(network)):
        signed_for = f"chain {result.network.chain_id}, registry {result.network.registry}" if result.network else "no network"
        raise ProvenanceError(f"the manifest is signed for {signed_for}, not for this network (chain {network.chain_id}, registry {network.registry})")
    if device is not None and result.signer.lower() != device.lower():
        raise ProvenanceError(f"the manifest is signed by {result.signer}, but the batch was submitted by device {device}")
    return parse_manifest((directory / MANIFEST).read_bytes())

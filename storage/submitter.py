"""The contributor's side of the chain: pinned clips go to the registry in batches (pinned -> submitted),
and the validator's settlements come back (submitted -> settled)."""
from __future__ import annotations

import logging
from dataclasses import dataclass

from storage.chain import Chain, ChainError, ChainUnavailable
from storage.cid import Cid
from storage.contracts.encoding import bitmap_bits, unpack_qualities
from storage.outbox import Outbox

log = logging.getLogger("knack.chain")
MAX_BATCH = 64


@dataclass(frozen=True)
class Submitted:
    batch_id: int | None
    clip_ids: list
    tx_hash: str
    error: str = ""
    later: bool = False  # the chain was unreachable: the signed transaction waits to be sent again


def submit_due(outbox: Outbox, chain: Chain, key, max_batch: int = MAX_BATCH, now: float | None = None) -> list[Submitted]:
    """Finishes any batch signed before (a crash, a dropped connection), then submits the pinned clips
    that are due, `max_batch` per transaction."""
    chain.fund(key.address)
    results = [_finish(outbox, chain, tx_hash, raw, clip_ids) for tx_hash, raw, clip_ids in outbox.staged_txs("submit")]
    if any(r.later for r in results):
        return results
    due = outbox.due("pinned", now)
    for start in range(0, len(due), max_batch):
        chunk = due[start : start + max_batch]
        digests = [Cid.parse(e.cid).digest for e in chunk]
        try:
            raw, tx_hash = chain.sign(key, chain.registry.functions.submitBatch(digests))
        except ChainError as exc:
            for entry in chunk:
                outbox.failed(entry.clip_id, f"not submitted: {exc}")
            results.append(Submitted(None, [e.clip_id for e in chunk], "", str(exc)))
            break
        outbox.stage_tx(tx_hash, raw, "submit", [e.clip_id for e in chunk])
        results.append(_finish(outbox, chain, tx_hash, raw, [e.clip_id for e in chunk]))
        if results[-1].error:
            break
    return results


def _finish(outbox: Outbox, chain: Chain, tx_hash: str, raw: bytes, clip_ids: list[str]) -> Submitted:
    try:
        receipt = chain.send(raw, tx_hash)
    except ChainUnavailable as exc:  # the signed transaction stays staged and is sent again next round
        for clip_id in clip_ids:
            outbox.failed(clip_id, f"submission waits: {exc}")
        return Submitted(None, clip_ids, tx_hash, str(exc), later=True)
    except ChainError as exc:  # reverted or replaced: forget it, the clips are signed into a new batch later
        outbox.drop_tx(tx_hash)
        for clip_id in clip_ids:
            outbox.failed(clip_id, f"submission failed: {exc}")
        return Submitted(None, clip_ids, tx_hash, str(exc))
    events = chain.registry.events.BatchSubmitted().process_receipt(receipt)
    batch_id = int(events[0]["args"]["batchId"])
    outbox.submitted(tx_hash, batch_id, clip_ids)
    log.info("batch %d of %d clip(s) submitted in %s", batch_id, len(clip_ids), tx_hash)
    return Submitted(batch_id, clip_ids, tx_hash)


def sync_settlements(outbox: Outbox, chain: Chain) -> int:
    """Reads the registry's BatchSettled events for this device's unsettled batches into the outbox."""
    batches = outbox.unsettled_batches()
    if not batches:
        return 0
    registry = chain.registry
    base, cap = registry.functions.rewardPerClip().call(), registry.functions.maxRewardPerClip().call()
    changed = 0
    for batch_id in batches:
        logs = registry.events.BatchSettled().get_logs(from_block=chain.deployment.block, argument_filters={"batchId": batch_id})
        if not logs:
            continue
        args = logs[0]["args"]
        _, _, count, _ = registry.functions.batch(batch_id).call()
        accepted = bitmap_bits(list(args["acceptedBitmap"]), count)
        qualities = unpack_qualities(args["qualities"])
        reasons = list(args["rejectReasons"])
        outcomes, q, r = {}, iter(qualities), iter(reasons)
        for index, ok in enumerate(accepted):
            if ok:
                outcomes[index] = (True, min(cap, base * next(q, 0) // 10000), "")
            else:
                outcomes[index] = (False, 0, REASONS.get(next(r, 0), "rejected"))
        changed += outbox.settled(batch_id, outcomes)
    return changed


# The validator's reason codes, as emitted in BatchSettled.rejectReasons.
REASONS = {
    1: "unreadable: the clip could not be fetched or decoded by its CID",
    2: "bad signature: the manifest is not signed by the submitting device",
    3: "file mismatch: a file's sha256 differs from the manifest",
    4: "not accepted by the device's own policy",
    5: "duplicate: the same CID was submitted before",
    6: "duplicate: the same video was submitted before under another clip id",
}

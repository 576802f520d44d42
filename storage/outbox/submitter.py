"""The contributor's side of the chain: pinned clips go to the registry in batches (pinned -> submitted),
and the validator's settlements come back (submitted -> settled)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from storage.content.cid import Cid
from storage.ledger.base import ChainError, ChainUnavailable, Ledger
from storage.ledger.reasons import Reason
from storage.ledger.rewards import clip_reward
from storage.outbox.db import Outbox

log = logging.getLogger("knack.chain")
MAX_BATCH = 64


@dataclass(frozen=True)
class Submitted:
    batch_id: int | None
    clip_ids: list
    tx_hash: str
    error: str = ""
    later: bool = False  # the chain was unreachable: the signed transaction waits to be sent again


def submit_due(outbox: Outbox, chain: Ledger, key, max_batch: int = MAX_BATCH, now: float | None = None) -> list[Submitted]:
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
            raw, tx_hash = chain.sign_submission(key, digests)
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


def _finish(outbox: Outbox, chain: Ledger, tx_hash: str, raw: bytes, clip_ids: list[str]) -> Submitted:
    try:
        batch_id = chain.send_submission(raw, tx_hash)
    except ChainUnavailable as exc:  # the signed transaction stays staged and is sent again next round
        for clip_id in clip_ids:
            outbox.failed(clip_id, f"submission waits: {exc}")
        return Submitted(None, clip_ids, tx_hash, str(exc), later=True)
    except ChainError as exc:  # reverted or replaced: forget it, the clips are signed into a new batch later
        outbox.drop_tx(tx_hash)
        for clip_id in clip_ids:
            outbox.failed(clip_id, f"submission failed: {exc}")
        return Submitted(None, clip_ids, tx_hash, str(exc))
    outbox.submitted(tx_hash, batch_id, clip_ids)
    log.debug("batch %d of %d clip(s) submitted in %s", batch_id, len(clip_ids), tx_hash)  # reported as an event
    return Submitted(batch_id, clip_ids, tx_hash)


def sync_settlements(outbox: Outbox, chain: Ledger) -> int:
    """Reads the validator's settlements of this device's unsettled batches into the outbox."""
    batches = outbox.unsettled_batches()
    if not batches:
        return 0
    terms = chain.reward_terms()
    changed = 0
    for batch_id in batches:
        settlement = chain.settlement(batch_id)
        if settlement is None:
            continue
        outcomes, qualities, reasons = {}, iter(settlement.qualities_bps), iter(settlement.reasons)
        for index, ok in enumerate(settlement.accepted):
            if ok:
                outcomes[index] = (True, clip_reward(next(qualities, 0), terms), "")
            else:
                outcomes[index] = (False, 0, Reason.describe(next(reasons, 0)))
        changed += outbox.settled(batch_id, outcomes)
    return changed

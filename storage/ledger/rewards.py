"""Rewards: what one accepted clip earns (pure, the registry's own rule), and a contributor's view of what
they have earned and why, read from the ledger alone (no device needed)."""

from __future__ import annotations

from collections import Counter

from storage.ledger.base import Ledger, RewardTerms
from storage.ledger.reasons import Reason

QUALITY_SCALE = 10_000  # qualities are basis points


def clip_reward(quality_bps: int, terms: RewardTerms) -> int:
    """Token units for one accepted clip: the per-clip reward scaled by quality, never above the cap
    (ClipRegistry.settleBatch mints exactly this)."""
    return min(terms.cap, terms.per_clip * max(0, quality_bps) // QUALITY_SCALE)


def tokens(amount: int) -> str:
    return f"{amount / 10**18:.4f}"


def rewards_view(ledger: Ledger, address: str) -> dict:
    address = ledger.checksum(address)
    pending = {b.batch_id: len(b.digests) for b in ledger.submissions_of(address)}
    accepted = rejected = 0
    reasons: Counter = Counter()
    events = []
    for s in ledger.settlements_of(address):
        n_accepted = sum(s.accepted)
        accepted += n_accepted
        rejected += len(s.accepted) - n_accepted
        for code in s.reasons:
            reasons[Reason.describe(code)] += 1
        events.append(
            {
                "block": s.block,
                "batch": s.batch_id,
                "tx": s.tx,
                "accepted": n_accepted,
                "rejected": len(s.accepted) - n_accepted,
                "reward": str(s.reward),
                "reward_tokens": tokens(s.reward),
            }
        )
        pending.pop(s.batch_id, None)
    balance = ledger.balance_of(address)
    return {
        "address": address,
        "token": ledger.token_address(),
        "balance": str(balance),
        "balance_tokens": tokens(balance),
        "accepted": accepted,
        "pending": sum(pending.values()),
        "rejected": rejected,
        "rejected_reasons": dict(reasons),
        "events": events,
    }

"""Rewards: what one accepted clip earns (pure, the registry's own rule), and a contributor's view of what
they have earned and why, in all and per device, read from the ledger alone (no device needed)."""

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
    """What `address` (a contributor) has earned and why, in all and per device it registered."""
    address = ledger.checksum(address)
    devices: dict[str, dict] = {}

    def device(addr: str) -> dict:
        key = ledger.checksum(addr) if addr else ""
        if key not in devices:
            devices[key] = {"device": key, "status": "", "blocked": False, "strikes": 0, "accepted": 0, "rejected": 0, "pending": 0, "reward": 0}
        return devices[key]

    for record in ledger.devices_of(address):
        device(record.device).update(status=record.status, blocked=record.blocked, strikes=record.strikes)
    pending = {b.batch_id: (b.device, len(b.digests)) for b in ledger.submissions_of(address)}
    accepted = rejected = 0
    reasons: Counter = Counter()
    events = []
    for s in ledger.settlements_of(address):
        n_accepted = sum(s.accepted)
        accepted += n_accepted
        rejected += len(s.accepted) - n_accepted
        for code in s.reasons:
            reasons[Reason.describe(code)] += 1
        row = device(s.device)
        row["accepted"] += n_accepted
        row["rejected"] += len(s.accepted) - n_accepted
        row["reward"] += s.reward
        events.append(
            {
                "block": s.block,
                "batch": s.batch_id,
                "tx": s.tx,
                "device": s.device,
                "accepted": n_accepted,
                "rejected": len(s.accepted) - n_accepted,
                "reward": str(s.reward),
                "reward_tokens": tokens(s.reward),
            }
        )
        pending.pop(s.batch_id, None)
    for batch_device, n in pending.values():
        device(batch_device)["pending"] += n
    balance = ledger.balance_of(address)
    return {
        "address": address,
        "token": ledger.token_address(),
        "balance": str(balance),
        "balance_tokens": tokens(balance),
        "accepted": accepted,
        "pending": sum(n for _, n in pending.values()),
        "rejected": rejected,
        "rejected_reasons": dict(reasons),
        "events": events,
        "devices": [dict(row, reward=str(row["reward"]), reward_tokens=tokens(row["reward"])) for row in devices.values()],
    }

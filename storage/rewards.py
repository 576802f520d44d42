"""The rewards view: what a contributor has earned and why, read from the chain alone (no device needed)."""
from __future__ import annotations

from collections import Counter

from storage.chain import Chain
from storage.submitter import REASONS


def _tokens(amount: int) -> str:
    return f"{amount / 10**18:.4f}"


def rewards_view(chain: Chain, address: str) -> dict:
    registry, token = chain.registry, chain.token
    address = chain.w3.to_checksum_address(address)
    start = chain.deployment.block
    submitted = {int(e["args"]["batchId"]): len(e["args"]["digests"]) for e in registry.events.BatchSubmitted().get_logs(from_block=start, argument_filters={"contributor": address})}
    accepted = rejected = 0
    reasons: Counter = Counter()
    events = []
    for e in registry.events.BatchSettled().get_logs(from_block=start, argument_filters={"contributor": address}):
        args = e["args"]
        batch = int(args["batchId"])
        accepted += int(args["accepted"])
        rejected += int(args["rejected"])
        for code in args["rejectReasons"]:
            reasons[REASONS.get(code, f"reason {code}")] += 1
        events.append({"block": e["blockNumber"], "batch": batch, "tx": e["transactionHash"].hex(), "accepted": int(args["accepted"]), "rejected": int(args["rejected"]), "reward": str(args["reward"]), "reward_tokens": _tokens(int(args["reward"]))})
        submitted.pop(batch, None)
    balance = token.functions.balanceOf(address).call()
    return {
        "address": address,
        "token": token.address,
        "balance": str(balance),
        "balance_tokens": _tokens(balance),
        "accepted": accepted,
        "pending": sum(submitted.values()),
        "rejected": rejected,
        "rejected_reasons": dict(reasons),
        "events": events,
    }

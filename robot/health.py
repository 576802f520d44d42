"""Is the service doing its job? A pure judgement over what it knows, for /healthz.

ok: every stream records and clips flow. degraded: something needs a person or will once it lasts —
each reason is one sentence that says what and why. The service keeps running either way."""

from __future__ import annotations

from dataclasses import dataclass

from knack.endpoint import Health


@dataclass(frozen=True)
class StreamHealth:
    name: str
    kind: str
    state: str  # starting | recording | waiting: <why> | ended | stopped | failed: <why>
    last_error: str = ""


def assess(
    streams: list[StreamHealth],
    recording: bool,
    paused_because: str | None = None,
    chain_problem: str | None = None,
    store_problem: str | None = None,
    label_problem: str | None = None,
    outbox_problem: str | None = None,
    capture_problem: str | None = None,
    stopping: bool = False,
) -> Health:
    reasons = []
    if stopping:
        reasons.append("stopping: sealing the open clip and finishing labeling and uploads")
    if paused_because:
        reasons.append(f"recording paused: {paused_because}")
    elif not recording and not stopping:
        reasons.append("not recording")
    if not streams:
        reasons.append("no sources configured")
    for s in streams:
        if s.state == "recording":
            continue
        if s.state == "starting":
            reasons.append(f"{s.kind} {s.name} is starting")
        elif s.state.startswith("waiting"):
            reasons.append(f"{s.kind} {s.name} is not delivering: {s.state.split(': ', 1)[-1]}")
        elif s.state == "ended":
            reasons.append(f"{s.kind} {s.name} has ended (a file source at its end)")
        else:
            reasons.append(f"{s.kind} {s.name} {s.state}" + (f": {s.last_error}" if s.last_error and s.last_error not in s.state else ""))
    if chain_problem:
        reasons.append(f"chain: {chain_problem} (clips wait in the outbox)")
    if store_problem:
        reasons.append(f"content store: {store_problem} (clips wait in the outbox)")
    if label_problem:
        reasons.append(f"labeler: {label_problem}")
    if outbox_problem:
        reasons.append(f"outbox: {outbox_problem}")
    if capture_problem:
        reasons.append(f"capture: {capture_problem}")
    return Health.of(reasons)

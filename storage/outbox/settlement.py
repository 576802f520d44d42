"""One round of the chain steps for a device's outbox: submit what is pinned, let the validator settle
(where this process is also the validator, as in the demo), and read the settlements back.

`knack demo`, the app's chain worker and `knack robot`'s chain thread all run this same round."""

from __future__ import annotations

from dataclasses import dataclass, field

from storage.ledger.base import ChainError, Ledger
from storage.outbox.db import Outbox
from storage.outbox.submitter import submit_due, sync_settlements


@dataclass
class SettleReport:
    submitted: list = field(default_factory=list)  # storage.outbox.submitter.Submitted
    verdicts: dict = field(default_factory=dict)  # batch id -> [storage.validator.Verdict]
    settled: int = 0  # clips whose settlement was read back in this round

    @property
    def errors(self) -> list[str]:
        return [s.error for s in self.submitted if s.error]


def settle_round(outbox: Outbox, chain: Ledger, key, validator=None) -> SettleReport:
    """Raises ChainError when nothing is deployed or the chain cannot be reached; the outbox keeps every
    clip's state either way, so the next round resumes where this one stopped."""
    if chain.deployment is None:
        raise ChainError("no registry deployed on this chain: run `knack chain deploy`")
    report = SettleReport(submitted=submit_due(outbox, chain, key))
    if validator is not None:
        report.verdicts = validator.run_once()
    report.settled = sync_settlements(outbox, chain)
    return report

"""What one `knack tui` session runs: the capture session of `knack record` (recorder -> label worker ->
outbox -> pinner) and the chain steps of `knack submit`, `knack validate` and `knack rewards`.

Every method here calls public functions of `collector` and `storage` only. Capture, labeling and pinning
run in their own threads; the chain methods block and are called from Textual thread workers."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable

from collector.config import Config
from collector.session import CaptureSession
from storage.outbox.settlement import SettleReport


@dataclass
class Event:
    """Something a background thread reports to the app: kind is clip | labeled | pinned."""

    kind: str
    payload: object


class Session(CaptureSession):
    """The capture session of `knack record` (collector.session), plus the chain steps. Background stages
    report to `on_event`, which the app turns into messages for its event loop."""

    def __init__(self, config: Config, key, on_event: Callable[[Event], None] | None = None, validator_key=None):
        super().__init__(
            config,
            key,
            on_clip=lambda clip: self.on_event(Event("clip", clip)),
            on_labeled=lambda result: self.on_event(Event("labeled", result)),
            on_pinned=lambda result: self.on_event(Event("pinned", result)),
        )
        self.validator_key = validator_key  # None: settling is the validator's job (`knack validate`)
        self.on_event = on_event or (lambda event: None)
        self._chain = None
        self._validator = None
        self._chain_lock = threading.RLock()  # one caller at a time on the chain client

    @property
    def contributor(self) -> str:
        return self.config.identity.contributor or self.key.address

    def close(self, at_ns: int | None = None) -> None:
        super().close(at_ns)
        with self._chain_lock:
            if self._chain is not None:
                self._chain.close()
                self._chain = self._validator = None

    # --- the chain (blocking: call from a thread worker) -------------------------------------------
    def chain(self):
        """The configured chain (embedded by default), opened once; with a validator key the embedded chain
        deploys itself on first use, as `knack demo` does."""
        from collector.cli import open_ledger

        with self._chain_lock:
            if self._chain is None:
                self._chain = open_ledger(self.config)
            chain = self._chain
            if chain.deployment is None and chain.embedded and self.validator_key is not None:
                chain.deploy(self.validator_key, self.validator_key.address)
            return chain

    def settle(self) -> SettleReport:
        """`knack submit`, then (with a validator key, as in the demo) `knack validate`, then the settlements read back."""
        from storage.outbox.settlement import settle_round
        from storage.validator import Validator

        with self._chain_lock:
            chain = self.chain()
            if self.validator_key is not None and self._validator is None:
                # Opened once: it keeps a database of the CIDs and videos it has seen.
                self._validator = Validator(chain, self.store, self.validator_key, self.config.data_path / "validator.sqlite")
            return settle_round(self.outbox, chain, self.key, self._validator)

    def rewards(self, address: str) -> dict | None:
        """`knack rewards ADDRESS`; None while nothing is deployed on the embedded chain."""
        from storage.ledger.rewards import rewards_view

        chain = self.chain()
        if chain.deployment is None:
            return None
        with self._chain_lock:
            return rewards_view(chain, address)

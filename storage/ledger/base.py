"""The ledger seam: what the outbox, the validator and the rewards view need from a chain, in plain data.

`Web3Ledger` (web3_ledger.py) is the implementation, over the embedded EVM or any JSON-RPC node; nothing
outside it sees a contract object, an ABI or a web3 log."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol


class ChainError(Exception):
    """A transaction that reverted or could not be sent, in one sentence."""


class ChainUnavailable(ChainError):
    """The chain cannot be reached now: try again later."""


@dataclass(frozen=True)
class Deployment:
    chain_id: int
    registry: str
    token: str
    block: int

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> Deployment | None:
        try:
            return cls(**json.loads(path.read_text()))
        except FileNotFoundError:
            return None


@dataclass(frozen=True)
class SubmittedBatch:
    """A batch of clips (their CIDs' sha2-256 digests) submitted by a contributor, not necessarily settled."""

    batch_id: int
    contributor: str
    digests: tuple[bytes, ...]


@dataclass(frozen=True)
class Settlement:
    """The validator's verdict on one batch as the chain recorded it: a flag per clip in submission order,
    a quality (basis points) per accepted clip and a reason code per rejected clip, in the same order."""

    batch_id: int
    contributor: str
    accepted: tuple[bool, ...]
    qualities_bps: tuple[int, ...]
    reasons: tuple[int, ...]
    reward: int  # token units minted for the batch
    block: int = 0
    tx: str = ""


@dataclass(frozen=True)
class RewardTerms:
    per_clip: int  # token units for one accepted clip of quality 1.0
    cap: int  # the most one clip can earn


class Ledger(Protocol):
    embedded: bool
    deployment: Deployment | None

    def deploy(self, admin, validator: str) -> Deployment:
        """Deploys the registry and its token, with `admin` (a key) as admin and `validator` as validator."""
        ...

    def fund(self, address: str) -> None:
        """Tops up an account with gas money where the chain allows it (the embedded one)."""
        ...

    def sign_submission(self, key, digests: list[bytes]) -> tuple[bytes, str]:
        """A signed, unsent transaction submitting one batch: (raw bytes, hash). Raises ChainError when the
        registry would refuse it."""
        ...

    def send_submission(self, raw: bytes, tx_hash: str) -> int:
        """Sends a signed submission (again, if it was sent before) and returns its batch id; ChainUnavailable
        means try again later, any other ChainError that it will never go through."""
        ...

    def pending_batches(self) -> list[SubmittedBatch]: ...

    def settle(self, key, batch_id: int, accepted: list[bool], qualities_bps: list[int], reasons: list[int]) -> str:
        """Records the validator's verdict on a batch (minting the rewards); returns the transaction hash."""
        ...

    def settlement(self, batch_id: int) -> Settlement | None: ...

    def reward_terms(self) -> RewardTerms: ...

    def submissions_of(self, contributor: str) -> list[SubmittedBatch]: ...

    def settlements_of(self, contributor: str) -> list[Settlement]: ...

    def balance_of(self, address: str) -> int: ...

    def token_address(self) -> str: ...

    def checksum(self, address: str) -> str: ...

    def close(self) -> None: ...

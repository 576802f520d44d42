"""The ledger seam: what the outbox, the validator and the rewards view need from a chain, in plain data.

`Web3Ledger` (web3_ledger.py) is the implementation, over the embedded EVM or any JSON-RPC node; nothing
outside it sees a contract object, an ABI or a web3 log. Keys are `collector.identity.DeviceKey`s (an
`.address`, `.sign_hash(digest)` and `.sign_transaction(tx)`); the key never leaves its object."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from storage.ledger.reasons import strike_mask

if TYPE_CHECKING:
    from collector.identity import SigningDomain


class ChainError(Exception):
    """A transaction that reverted or could not be sent, in one sentence. `error` names the contract's
    custom error when the registry refused it (e.g. "UnregisteredDevice"), for callers that act on it."""

    def __init__(self, message: str, error: str = ""):
        super().__init__(message)
        self.error = error


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
    """A batch of clips (their CIDs' sha2-256 digests) submitted by a device on behalf of the contributor it
    is registered to, not necessarily settled."""

    batch_id: int
    contributor: str
    digests: tuple[bytes, ...]
    device: str = ""


@dataclass(frozen=True)
class Settlement:
    """The validator's verdict on one batch as the chain recorded it: a flag per clip in submission order,
    a quality (basis points) per accepted clip and a reason code per rejected clip, in the same order."""

    batch_id: int
    contributor: str
    accepted: tuple[bool, ...]
    qualities_bps: tuple[int, ...]
    reasons: tuple[int, ...]
    reward: int  # token units minted for the batch, to the contributor
    block: int = 0
    tx: str = ""
    device: str = ""


@dataclass(frozen=True)
class RewardTerms:
    per_clip: int  # token units for one accepted clip of quality 1.0
    cap: int  # the most one clip can earn


@dataclass(frozen=True)
class StrikeRules:
    """A device is blocked when its strikes within one window reach `max_strikes` (0: never); a clip
    rejected for reason code r is a strike when bit r of `mask` is set (`reasons.strike_mask()`)."""

    max_strikes: int = 3
    window_s: int = 7 * 24 * 3600
    mask: int = field(default_factory=strike_mask)

    def __post_init__(self):
        if not 0 <= self.max_strikes < 2**32 or not 0 <= self.window_s < 2**40 or not 0 <= self.mask < 2**256:
            raise ValueError(f"strike rules out of range (max_strikes < 2**32, window_s < 2**40, mask < 2**256): {self}")


@dataclass(frozen=True)
class DeviceRecord:
    """A device key as the registry knows it: whom it pays, whether it may submit."""

    device: str
    contributor: str
    status: str  # "active" or "revoked" (revocation is for good)
    blocked: bool  # too many strikes: refused until its contributor clears them
    strikes: int  # within the current window
    window_start: int  # unix time the current strike window began (0: no strike yet)

    @property
    def can_submit(self) -> bool:
        return self.status == "active" and not self.blocked


class Ledger(Protocol):
    embedded: bool
    deployment: Deployment | None

    def deploy(self, admin, validator: str, *, policy: bytes = bytes(32), strikes: StrikeRules | None = None) -> Deployment:
        """Deploys the registry and its token, with `admin` (a key) as admin, `validator` as validator, `policy`
        as the network's model and policy digest and `strikes` (default StrikeRules()) as its strike rules."""
        ...

    def fund(self, address: str) -> None:
        """Tops up an account with gas money where the chain allows it (the embedded one)."""
        ...

    def head(self) -> int:
        """The latest block's number."""
        ...

    def domain(self) -> SigningDomain:
        """The network's EIP-712 domain (chain id, registry): what manifests and registrations are signed in."""
        ...

    # -- devices ----------------------------------------------------------------------------------------

    def register_device(self, relayer, device, contributor, deadline: int | None = None) -> str:
        """Registers `device` to `contributor`, both keys here, in a transaction `relayer` (a key) sends and
        pays for; returns its hash. Raises ChainError when the registry refuses (a key registered before)."""
        ...

    def registration_deadline(self, valid_s: int = 3600) -> int:
        """A registration deadline (unix time) `valid_s` from now."""
        ...

    def registration_digest(self, device: str, contributor: str, deadline: int) -> bytes:
        """The 32-byte EIP-712 digest that both `device` and `contributor` sign to register the device, with the
        contributor's current nonce: for a contributor who signs elsewhere (then `submit_registration`)."""
        ...

    def registration_typed_data(self, device: str, contributor: str, deadline: int) -> dict:
        """The same registration as EIP-712 typed data, for a wallet's eth_signTypedData_v4."""
        ...

    def submit_registration(self, relayer, device: str, contributor: str, deadline: int, contributor_sig: bytes, device_sig: bytes) -> str:
        """Sends a registration signed elsewhere (65-byte signatures over `registration_digest`)."""
        ...

    def revoke_device(self, contributor, device: str) -> str:
        """`contributor` (a key) revokes its `device` for good."""
        ...

    def clear_strikes(self, key, device: str) -> str:
        """Resets a device's strikes and unblocks it; `key` is its contributor's or the admin's."""
        ...

    def device(self, address: str) -> DeviceRecord | None:
        """The registry's record of a device key; None when it was never registered."""
        ...

    def devices_of(self, contributor: str) -> list[DeviceRecord]:
        """Every device ever registered to `contributor`, in registration order (revoked ones too)."""
        ...

    # -- the network's rules ----------------------------------------------------------------------------

    def policy_digest(self) -> bytes:
        """The 32-byte digest of the labeler models and policy the network's validators run."""
        ...

    def set_policy(self, admin, digest: bytes) -> str: ...

    def strike_rules(self) -> StrikeRules: ...

    def set_strike_rules(self, admin, rules: StrikeRules) -> str: ...

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

    def paid_clips(self, from_block: int = 0) -> list[tuple[bytes, int, str]]:
        """(digest, batch id, device) of every clip accepted (paid) in batches settled at `from_block` or later."""
        ...

    def settled_batches(self, contributor: str | None = None, from_block: int = 0) -> list[tuple[SubmittedBatch, Settlement]]:
        """Every batch settled at `from_block` or later (of `contributor`, or of everyone) with its submission, in
        settlement order."""
        ...

    def batch_root(self, batch_id: int) -> bytes:
        """The Merkle root the registry stores for a batch (32 zero bytes for an id never submitted)."""
        ...

    def verify_inclusion(self, batch_id: int, index: int, digest: bytes, proof: list[bytes]) -> bool:
        """The registry's own answer: is `digest` clip `index` of the batch, by this Merkle proof?"""
        ...

    def reward_terms(self) -> RewardTerms: ...

    def submissions_of(self, contributor: str) -> list[SubmittedBatch]: ...

    def settlements_of(self, contributor: str) -> list[Settlement]: ...

    def balance_of(self, address: str) -> int: ...

    def token_address(self) -> str: ...

    def checksum(self, address: str) -> str: ...

    def close(self) -> None: ...

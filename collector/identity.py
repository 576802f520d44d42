"""The device's secp256k1 identity: created on first run, kept in an encrypted Ethereum keystore, used to sign manifests."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

SIGNATURE_SCHEME = "eip191-sha256"


class IdentityError(RuntimeError):
    pass


@dataclass(frozen=True)
class DeviceKey:
    address: str
    _key: bytes

    def __repr__(self) -> str:  # the key never shows up in a log or a traceback
        return f"DeviceKey({self.address})"

    def sign_transaction(self, transaction: dict) -> bytes:
        """A signed raw transaction for the chain; the key never leaves this object."""
        from eth_account import Account

        return bytes(Account.sign_transaction(transaction, self._key).raw_transaction)

    def sign(self, message: bytes) -> dict:
        """Signs sha256(message) as an EIP-191 personal message, so any EVM tool (and ecrecover) can check it."""
        from eth_account import Account
        from eth_account.messages import encode_defunct

        digest = hashlib.sha256(message).digest()
        signed = Account.sign_message(encode_defunct(primitive=digest), self._key)
        return {"scheme": SIGNATURE_SCHEME, "signer": self.address, "value": "0x" + signed.signature.hex().removeprefix("0x")}


def recover_signer(message: bytes, signature: dict) -> str:
    """The address that signed sha256(message) as an EIP-191 personal message (what `DeviceKey.sign` makes).

    eth-keys and eth-hash do it directly: `knack verify` and the validator then start in a third of the time
    eth-account's import takes, for the same recovery (eth-account itself calls eth-keys for it)."""
    if signature.get("scheme") != SIGNATURE_SCHEME:
        raise IdentityError(f"unknown signature scheme {signature.get('scheme')!r} (expected {SIGNATURE_SCHEME})")
    from eth_hash.auto import keccak
    from eth_keys import keys

    try:
        raw = bytes.fromhex(str(signature["value"]).removeprefix("0x"))
        if len(raw) != 65:
            raise ValueError(f"a signature is 65 bytes, this one is {len(raw)}")
        v = raw[64] - 27 if raw[64] >= 27 else raw[64]
        digest = hashlib.sha256(message).digest()
        signed = keccak(b"\x19Ethereum Signed Message:\n32" + digest)
        return (
            keys.Signature(vrs=(v, int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:64], "big")))
            .recover_public_key_from_msg_hash(signed)
            .to_checksum_address()
        )
    except Exception as exc:  # eth-keys raises its own validation errors for malformed signatures
        raise IdentityError(f"the signature cannot be read: {exc}") from None


def from_environment(variable: str) -> DeviceKey | None:
    """A key given as hex in an environment variable (for services whose secrets come from the
    environment, e.g. systemd credentials); None when the variable is not set."""
    value = os.environ.get(variable, "").strip()
    if not value:
        return None
    from eth_account import Account

    try:
        account = Account.from_key(value)
    except Exception:  # eth-keys raises several types for malformed keys; the value is never echoed
        raise IdentityError(f"{variable} is set but is not a 32-byte hex private key") from None
    return DeviceKey(account.address, bytes(account.key))


def load_or_create(path: Path, password: str, *, kdf: str = "scrypt", iterations: int | None = None) -> tuple[DeviceKey, bool]:
    """The key at `path`, creating it (mode 0600, written atomically) when there is none; True if created."""
    from eth_account import Account  # ~1 s to import: only where a key is used, not for every command

    if not password:
        raise IdentityError("the device key needs a password: set KNACK_DEVICE_PASSWORD or run from a terminal to be asked")
    if path.exists():
        try:
            keystore = json.loads(path.read_text())
            key = bytes(Account.decrypt(keystore, password))
        except ValueError as exc:
            if "MAC mismatch" in str(exc):
                raise IdentityError(f"wrong password for the device key {path}") from None
            raise IdentityError(f"device key {path} is not a readable Ethereum keystore: {exc}") from None
        return DeviceKey(Account.from_key(key).address, key), False
    account = Account.create()
    keystore = Account.encrypt(account.key, password, kdf=kdf, iterations=iterations)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(keystore, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return DeviceKey(account.address, bytes(account.key)), True

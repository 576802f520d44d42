"""The device's secp256k1 identity: created on first run, kept in an encrypted Ethereum keystore, used to sign manifests."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

SIGNATURE_SCHEME = "eip191-sha256"  # a device's own signature, bound to no network (clips not labeled for one)
TYPED_SCHEME = "eip712"  # bound to one chain and registry: what the validator accepts
DOMAIN_NAME, DOMAIN_VERSION = "Knack", "1"  # the registry's EIP-712 domain (ClipRegistry.sol)
DOMAIN_TYPE = b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
# The manifest is signed as one typed field, the sha256 of its canonical bytes: wallets show it, ecrecover checks it.
MANIFEST_TYPE = b"KnackManifest(bytes32 manifestSha256)"


class IdentityError(RuntimeError):
    pass


def typed_fields(encoded_type: bytes) -> tuple[str, list[dict]]:
    """An EIP-712 type string, e.g. b"Mail(address to,string text)", as eth_signTypedData's JSON gives it:
    ("Mail", [{"name": "to", "type": "address"}, {"name": "text", "type": "string"}])."""
    name, fields = encoded_type.decode().rstrip(")").split("(")
    return name, [dict(zip(("type", "name"), f.split(" "), strict=True)) for f in fields.split(",")]


def _keccak(data: bytes) -> bytes:
    from eth_hash.auto import keccak

    return keccak(data)


def _address_word(address: str) -> bytes:
    raw = bytes.fromhex(str(address).removeprefix("0x"))
    if len(raw) != 20:
        raise IdentityError(f"{address!r} is not an EVM address")
    return raw.rjust(32, b"\0")


@dataclass(frozen=True)
class SigningDomain:
    """The EIP-712 domain of one network: a signature made in it is worthless on another chain or registry."""

    chain_id: int
    registry: str

    def separator(self) -> bytes:
        return _keccak(
            _keccak(DOMAIN_TYPE)
            + _keccak(DOMAIN_NAME.encode())
            + _keccak(DOMAIN_VERSION.encode())
            + int(self.chain_id).to_bytes(32, "big")
            + _address_word(self.registry)
        )

    def hash(self, struct_hash: bytes) -> bytes:
        """The digest that is signed: keccak256(0x1901 || domain separator || hashStruct(message))."""
        return _keccak(b"\x19\x01" + self.separator() + struct_hash)

    def manifest_hash(self, message: bytes) -> bytes:
        return self.hash(_keccak(_keccak(MANIFEST_TYPE) + hashlib.sha256(message).digest()))

    def typed_data_domain(self) -> dict:
        """The domain as eth_signTypedData's JSON gives it (the `domain` member)."""
        return {"name": DOMAIN_NAME, "version": DOMAIN_VERSION, "chainId": int(self.chain_id), "verifyingContract": self.registry}

    def matches(self, other: SigningDomain) -> bool:
        return int(self.chain_id) == int(other.chain_id) and str(self.registry).lower() == str(other.registry).lower()


def recover_hash(digest: bytes, signature: bytes) -> str:
    """The address whose key made `signature` (65 bytes r || s || v) over the 32-byte `digest`."""
    from eth_keys import keys

    try:
        if len(signature) != 65:
            raise ValueError(f"a signature is 65 bytes, this one is {len(signature)}")
        v = signature[64] - 27 if signature[64] >= 27 else signature[64]
        r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:64], "big")
        return keys.Signature(vrs=(v, r, s)).recover_public_key_from_msg_hash(digest).to_checksum_address()
    except Exception as exc:  # eth-keys raises its own validation errors for malformed signatures
        raise IdentityError(f"the signature cannot be read: {exc}") from None


@dataclass(frozen=True)
class DeviceKey:
    """A secp256k1 key. `domain`, once the device knows its network, binds every manifest it signs to that
    chain and registry (EIP-712); before that, manifests carry an unbound EIP-191 signature."""

    address: str
    _key: bytes
    domain: SigningDomain | None = None

    def __repr__(self) -> str:  # the key never shows up in a log or a traceback
        return f"DeviceKey({self.address})"

    def bind(self, domain: SigningDomain | None) -> DeviceKey:
        return DeviceKey(self.address, self._key, domain)

    def sign_transaction(self, transaction: dict) -> bytes:
        """A signed raw transaction for the chain; the key never leaves this object."""
        from eth_account import Account

        return bytes(Account.sign_transaction(transaction, self._key).raw_transaction)

    def sign_hash(self, digest: bytes) -> bytes:
        """65 bytes r || s || v (v = 27 or 28, as ecrecover and OpenZeppelin's ECDSA take it) over a 32-byte digest."""
        from eth_keys import keys

        raw = keys.PrivateKey(self._key).sign_msg_hash(digest).to_bytes()
        return raw[:64] + bytes([raw[64] + 27])

    def sign(self, message: bytes, domain: SigningDomain | None = None) -> dict:
        """With a domain: EIP-712 typed data over sha256(message), bound to that chain and registry (what the
        validator pays for). Without: sha256(message) as an EIP-191 personal message (a clip's integrity on
        the device before it knows its network)."""
        domain = domain or self.domain
        if domain is not None:
            value = self.sign_hash(domain.manifest_hash(message))
            return {"scheme": TYPED_SCHEME, "chain_id": int(domain.chain_id), "registry": domain.registry, "signer": self.address, "value": "0x" + value.hex()}
        digest = hashlib.sha256(message).digest()
        value = self.sign_hash(_keccak(b"\x19Ethereum Signed Message:\n32" + digest))
        return {"scheme": SIGNATURE_SCHEME, "signer": self.address, "value": "0x" + value.hex()}


def signature_domain(signature: dict) -> SigningDomain | None:
    """The network an EIP-712 manifest signature names; None for an unbound (EIP-191) one."""
    if not isinstance(signature, dict) or signature.get("scheme") != TYPED_SCHEME:
        return None
    chain_id, registry = signature.get("chain_id"), signature.get("registry")
    if not isinstance(chain_id, int) or isinstance(chain_id, bool) or not 0 < chain_id < 2**64 or not isinstance(registry, str):
        raise IdentityError("the signature's network (chain_id, registry) is not readable")
    _address_word(registry)
    return SigningDomain(chain_id, registry)


def recover_signer(message: bytes, signature: dict) -> str:
    """The address that signed sha256(message): as EIP-712 typed data in the domain the signature names, or as
    an EIP-191 personal message (both made by `DeviceKey.sign`). Whether the domain is the right network is
    the caller's question (`signature_domain`).

    eth-keys and eth-hash do it directly: `knack verify` and the validator then start in a third of the time
    eth-account's import takes, for the same recovery (eth-account itself calls eth-keys for it)."""
    if not isinstance(signature, dict) or signature.get("scheme") not in (SIGNATURE_SCHEME, TYPED_SCHEME):
        scheme = signature.get("scheme") if isinstance(signature, dict) else None
        raise IdentityError(f"unknown signature scheme {scheme!r} (expected {TYPED_SCHEME} or {SIGNATURE_SCHEME})")
    value = signature.get("value")
    if not isinstance(value, str) or len(value) > 200:
        raise IdentityError("the signature value is not a hex string")
    try:
        raw = bytes.fromhex(value.removeprefix("0x"))
    except ValueError:
        raise IdentityError("the signature value is not a hex string") from None
    domain = signature_domain(signature)
    if domain is not None:
        return recover_hash(domain.manifest_hash(message), raw)
    return recover_hash(_keccak(b"\x19Ethereum Signed Message:\n32" + hashlib.sha256(message).digest()), raw)


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

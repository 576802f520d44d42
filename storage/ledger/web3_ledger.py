"""The ledger's web3 implementation: the clip registry and its reward token on an EVM chain, through web3.py.

Two chains behind the same client: the embedded one (py-evm in this process, state in the data
directory, the default) and any JSON-RPC endpoint (a dev node, a testnet, an L2). Transactions are
signed locally with keys from encrypted keystores; nonces, gas estimates, EIP-1559 fees, receipts and
reverts are handled here, and a revert comes back as one sentence that says what to do."""

from __future__ import annotations

import ast
import json
import logging
import re
import time
from pathlib import Path

from collector.identity import DOMAIN_TYPE, SigningDomain, typed_fields
from storage.ledger.base import (
    ChainError,
    ChainUnavailable,
    Deployment,
    DeviceRecord,
    RewardTerms,
    Settlement,
    StrikeRules,
    SubmittedBatch,
)
from storage.ledger.contracts.encoding import REGISTER_DEVICE_TYPE, bitmap, bitmap_bits, pack_qualities, registration_struct_hash, unpack_qualities

log = logging.getLogger("knack.chain")

ARTIFACTS = Path(__file__).resolve().parent / "contracts" / "artifacts"
DEFAULT_REWARD = 10**18  # one KNACK per accepted clip of quality 1.0
DEFAULT_CAP = 10**18
REGISTRATION_VALID_S = 3600  # how long a registration's signatures stay good by default
_STATUS = {1: "active", 2: "revoked"}  # ClipRegistry.STATUS_*
_LOG_CHUNK = 200  # batch ids per log query (topic lists are OR-ed; nodes limit their length)

# The registry's custom errors as sentences for a person (the fields are the error's arguments). Errors not
# named here are shown as Name(arguments).
REFUSALS = {
    "UnregisteredDevice": "device {device} is not registered to a contributor: register it with `knack device register`",
    "RevokedDevice": "device {device} is revoked: a revoked key can neither submit nor be registered again, so make a new device key and register that",
    "BlockedDevice": "device {device} is blocked after too many strikes (clips rejected as copies or false claims): its contributor must clear its strikes before it submits again",
    "DeviceAlreadyRegistered": "device {device} is already registered to contributor {contributor}",
    "BadContributorSignature": "the contributor's signature is not {contributor}'s over this registration (signed for another device, registry or deadline, or already used): sign it again",
    "BadDeviceSignature": "the device's signature is not {device}'s over this registration: a device key is registered only with its own signature",
    "RegistrationExpired": "the registration's deadline (unix time {deadline}) has passed: sign it again",
    "ZeroAddress": "the device and the contributor must both be real addresses, not 0x0",
    "NotContributor": "{caller} is not the contributor device {device} is registered to: only that contributor may do this",
    "AccessControlUnauthorizedAccount": "{account} does not hold the registry's {role} role",
    "UnknownBatch": "batch {batchId} was never submitted",
    "AlreadySettled": "batch {batchId} is settled already",
    "EmptyBatch": "a batch needs at least one clip",
    "BatchTooLarge": "a batch holds at most {max} clips, this one has {count}",
    "RewardTooLarge": "reward amounts must fit in 128 bits",
}


def artifact(name: str) -> dict:
    return json.loads((ARTIFACTS / f"{name}.json").read_text())


class Web3Ledger:
    """A connected chain, and (once deployed) its registry and token contracts: the `Ledger` of base.py."""

    def __init__(self, w3, deployment_path: Path, embedded_kv=None):
        self.w3, self.deployment_path, self._kv = w3, deployment_path, embedded_kv
        self.embedded = embedded_kv is not None
        self._errors = {}  # selector (4 bytes) -> the error's ABI entry
        for name in ("ClipRegistry", "KnackToken"):
            for item in artifact(name)["abi"]:
                if item.get("type") == "error":
                    signature = f"{item['name']}({','.join(i['type'] for i in item['inputs'])})"
                    self._errors[bytes(w3.keccak(text=signature)[:4])] = item
        self._roles = {bytes(32): "admin", bytes(w3.keccak(text="VALIDATOR_ROLE")): "validator"}
        self.deployment = Deployment.load(deployment_path)
        if self.deployment and self.deployment.chain_id != self.w3.eth.chain_id:
            raise ChainError(
                f"{deployment_path} names chain {self.deployment.chain_id}, but the node serves chain {self.w3.eth.chain_id}: run `knack chain deploy` for this chain"
            )

    # -- contracts ---------------------------------------------------------------------------------

    def _contract(self, name: str, address: str):
        return self.w3.eth.contract(address=address, abi=artifact(name)["abi"])

    @property
    def registry(self):
        if not self.deployment:
            raise ChainError("the contracts are not deployed on this chain yet: run `knack chain deploy`")
        return self._contract("ClipRegistry", self.deployment.registry)

    @property
    def token(self):
        return self._contract("KnackToken", self.registry.functions.token().call())

    # -- transactions ------------------------------------------------------------------------------

    def _revert_data(self, exc: Exception) -> bytes:
        """The revert data a failed call carries, however the node or the in-process chain wraps it."""
        data = getattr(exc, "data", None)
        if isinstance(data, dict):
            data = data.get("data")
        if isinstance(data, (bytes, bytearray)):
            return bytes(data)
        if isinstance(data, str) and re.fullmatch(r"0x([0-9a-fA-F]{2})+", data):
            return bytes.fromhex(data[2:])
        text = str(exc.args[0] if getattr(exc, "args", None) else exc)
        raw = text.removeprefix("execution reverted: ")
        if raw[:2] in ('b"', "b'"):  # the in-process chain gives the revert data as a bytes literal
            try:
                return bytes(ast.literal_eval(raw))
            except (ValueError, SyntaxError, TypeError):
                return b""
        found = re.search(r"0x[0-9a-fA-F]{8}(?:[0-9a-fA-F]{64})*", text)
        return bytes.fromhex(found.group()[2:]) if found else b""

    def refusal(self, exc: Exception) -> tuple[str, str]:
        """(error name, sentence) for a revert: the registry's custom errors as a person reads them
        (REFUSALS), require strings as their text; the name is "" when the contract gave none we know."""
        data = self._revert_data(exc)
        entry = self._errors.get(data[:4])
        if entry is None:
            text = str(exc.args[0] if getattr(exc, "args", None) else exc).replace("execution reverted: ", "").strip()
            return "", text or type(exc).__name__
        from eth_abi import decode

        types = [i["type"] for i in entry["inputs"]]
        try:
            values = decode(types, data[4:])
        except Exception:  # data that does not decode as the error says: name it without its arguments
            return entry["name"], f"the registry refused it: {entry['name']}"
        args = {i["name"]: self._show(i["type"], v) for i, v in zip(entry["inputs"], values, strict=True)}
        if entry["name"] == "AccessControlUnauthorizedAccount":
            args["role"] = self._roles.get(bytes(values[1]), "0x" + bytes(values[1]).hex())
        template = REFUSALS.get(entry["name"])
        if template is None:
            shown = ", ".join(f"{k}={v}" for k, v in args.items())
            return entry["name"], f"the registry refused it: {entry['name']}({shown})"
        return entry["name"], template.format(**args)

    def _show(self, kind: str, value) -> str:
        if kind == "address":
            return self.w3.to_checksum_address(value)
        if kind.startswith("bytes"):
            return "0x" + bytes(value).hex()
        return str(value)

    def reason(self, exc: Exception) -> str:
        """The contract's reason for a revert, in one sentence."""
        return self.refusal(exc)[1]

    def _refused(self, exc: Exception) -> ChainError:
        name, sentence = self.refusal(exc)
        return ChainError(sentence if name else f"the registry refused it: {sentence}", error=name)

    def sign(self, key, call, value: int = 0) -> tuple[bytes, str]:
        """A signed transaction for a contract call: (raw bytes, hash). Estimating gas runs the call, so
        a call that would revert stops here with the contract's reason, before anything is sent."""
        from web3.exceptions import ContractCustomError, ContractLogicError, Web3RPCError

        try:
            sender = key.address
            tx = call.build_transaction(
                {"from": sender, "value": value, "nonce": self.w3.eth.get_transaction_count(sender, "pending"), "chainId": self.w3.eth.chain_id}
            )
        except (ContractCustomError, ContractLogicError) as exc:
            raise self._refused(exc) from None
        except (ConnectionError, OSError, Web3RPCError) as exc:  # before the catch-all below: a node that is down
            raise ChainUnavailable(f"the chain is not reachable: {exc}") from None
        except Exception as exc:
            if type(exc).__name__ != "TransactionFailed":  # eth-tester's revert, from the embedded chain
                raise
            raise self._refused(exc) from None
        tx["gas"] = int(tx["gas"] * 1.2) + 10_000  # estimates are exact on dev chains, not on busy L2s
        if "maxFeePerGas" in tx:
            base = self.w3.eth.get_block("latest")["baseFeePerGas"]
            tx["maxFeePerGas"] = 2 * base + tx["maxPriorityFeePerGas"]
        raw = key.sign_transaction(tx)
        return raw, "0x" + self.w3.keccak(raw).hex().removeprefix("0x")

    def send(self, raw: bytes, tx_hash: str, timeout: float = 120.0) -> dict:
        """Broadcasts a signed transaction (again, if it was sent before: the same nonce cannot be spent
        twice) and waits for its receipt."""
        from web3.exceptions import TimeExhausted, TransactionNotFound, Web3RPCError

        try:
            try:
                receipt = self.w3.eth.get_transaction_receipt(tx_hash)
            except TransactionNotFound:
                try:
                    self.w3.eth.send_raw_transaction(raw)
                except (Web3RPCError, ValueError) as exc:
                    if "nonce too low" in str(exc):
                        # Not mined (no receipt above), and its nonce is spent: another transaction took it.
                        raise ChainError(f"transaction {tx_hash} was replaced: its nonce was used by another transaction") from None
                    if "already known" not in str(exc):
                        raise ChainError(f"the node refused the transaction: {exc}") from None
                receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=timeout)
        except TimeExhausted:
            raise ChainUnavailable(f"transaction {tx_hash} was not mined within {timeout:.0f} s") from None
        except TransactionNotFound:
            raise ChainError(f"transaction {tx_hash} was dropped: its nonce was used by another transaction") from None
        except (ConnectionError, OSError) as exc:
            raise ChainUnavailable(f"the chain is not reachable: {exc}") from None
        if receipt["status"] != 1:
            raise ChainError(f"transaction {tx_hash} reverted on chain")
        return receipt

    def transact(self, key, call, value: int = 0) -> dict:
        raw, tx_hash = self.sign(key, call, value)
        return self.send(raw, tx_hash)

    def _send(self, key, call) -> str:
        """Funds `key` where the chain allows it, sends the call and returns its transaction hash."""
        self.fund(key.address)
        return "0x" + bytes(self.transact(key, call)["transactionHash"]).hex()

    # -- set-up ------------------------------------------------------------------------------------

    def fund(self, address: str, minimum: int = 10**18) -> None:
        """Embedded chain only: tops up an account with test ether from eth-tester's funded account."""
        if not self.embedded or self.w3.eth.get_balance(address) >= minimum:
            return
        self.w3.eth.send_transaction({"from": self.w3.eth.accounts[0], "to": address, "value": 10 * minimum})

    def deploy(
        self,
        admin,
        validator: str,
        reward: int = DEFAULT_REWARD,
        cap: int = DEFAULT_CAP,
        policy: bytes = bytes(32),
        strikes: StrikeRules | None = None,
    ) -> Deployment:
        """Deploys the registry (which deploys its token) with `admin` as admin, `validator` as validator,
        `policy` as the network's model and policy digest and `strikes` (StrikeRules() when None) as its
        strike rules, all in the one deployment transaction."""
        strikes = strikes or StrikeRules()
        self.fund(admin.address)
        spec = artifact("ClipRegistry")
        factory = self.w3.eth.contract(abi=spec["abi"], bytecode=spec["bytecode"])
        args = (admin.address, validator, reward, cap, _digest(policy), strikes.max_strikes, strikes.window_s, strikes.mask)
        receipt = self.transact(admin, factory.constructor(*args))
        registry = self._contract("ClipRegistry", receipt["contractAddress"])
        self.deployment = Deployment(self.w3.eth.chain_id, receipt["contractAddress"], registry.functions.token().call(), receipt["blockNumber"])
        self.deployment.save(self.deployment_path)
        return self.deployment

    def head(self) -> int:
        return int(self.w3.eth.block_number)

    def domain(self) -> SigningDomain:
        if not self.deployment:
            raise ChainError("the contracts are not deployed on this chain yet: run `knack chain deploy`")
        return SigningDomain(self.deployment.chain_id, self.deployment.registry)

    # -- devices -------------------------------------------------------------------------------------

    def registration_deadline(self, valid_s: int = REGISTRATION_VALID_S) -> int:
        """A deadline `valid_s` from now, by the later of this machine's clock and the chain's last block (an
        embedded chain that sat idle has an old last block; its next one is stamped with the time now)."""
        return max(int(time.time()), int(self.w3.eth.get_block("latest")["timestamp"])) + valid_s

    def registration_digest(self, device: str, contributor: str, deadline: int) -> bytes:
        nonce = self.registry.functions.nonces(self.checksum(contributor)).call()
        return self.domain().hash(registration_struct_hash(self.checksum(device), self.checksum(contributor), nonce, deadline))

    def registration_typed_data(self, device: str, contributor: str, deadline: int) -> dict:
        """The registration as EIP-712 typed data (what a wallet's eth_signTypedData_v4 signs): the same
        digest as `registration_digest`, for a contributor who signs in a wallet."""
        domain_name, domain_fields = typed_fields(DOMAIN_TYPE)
        name, fields = typed_fields(REGISTER_DEVICE_TYPE)
        return {
            "types": {domain_name: domain_fields, name: fields},
            "primaryType": name,
            "domain": self.domain().typed_data_domain(),
            "message": {
                "device": self.checksum(device),
                "contributor": self.checksum(contributor),
                "nonce": self.registry.functions.nonces(self.checksum(contributor)).call(),
                "deadline": deadline,
            },
        }

    def register_device(self, relayer, device, contributor, deadline: int | None = None) -> str:
        deadline = self.registration_deadline() if deadline is None else deadline
        digest = self.registration_digest(device.address, contributor.address, deadline)
        return self.submit_registration(relayer, device.address, contributor.address, deadline, contributor.sign_hash(digest), device.sign_hash(digest))

    def submit_registration(self, relayer, device: str, contributor: str, deadline: int, contributor_sig: bytes, device_sig: bytes) -> str:
        call = self.registry.functions.registerDevice(
            self.checksum(device), self.checksum(contributor), int(deadline), bytes(contributor_sig), bytes(device_sig)
        )
        return self._send(relayer, call)

    def revoke_device(self, contributor, device: str) -> str:
        return self._send(contributor, self.registry.functions.revokeDevice(self.checksum(device)))

    def clear_strikes(self, key, device: str) -> str:
        return self._send(key, self.registry.functions.clearStrikes(self.checksum(device)))

    def device(self, address: str) -> DeviceRecord | None:
        address = self.checksum(address)
        contributor, status, blocked, strikes, window_start = self.registry.functions.deviceRecord(address).call()
        if status not in _STATUS:
            return None
        return DeviceRecord(address, contributor, _STATUS[status], bool(blocked), int(strikes), int(window_start))

    def devices_of(self, contributor: str) -> list[DeviceRecord]:
        logs = self.registry.events.DeviceRegistered().get_logs(from_block=self.deployment.block, argument_filters={"contributor": self.checksum(contributor)})
        return [self.device(e["args"]["device"]) for e in logs]

    # -- the network's rules ---------------------------------------------------------------------------

    def policy_digest(self) -> bytes:
        return bytes(self.registry.functions.policyDigest().call())

    def set_policy(self, admin, digest: bytes) -> str:
        return self._send(admin, self.registry.functions.setPolicy(_digest(digest)))

    def strike_rules(self) -> StrikeRules:
        max_strikes, window, mask = self.registry.functions.strikeRules().call()
        return StrikeRules(int(max_strikes), int(window), int(mask))

    def set_strike_rules(self, admin, rules: StrikeRules) -> str:
        return self._send(admin, self.registry.functions.setStrikeRules(rules.max_strikes, rules.window_s, rules.mask))

    # -- batches -------------------------------------------------------------------------------------

    def sign_submission(self, key, digests: list[bytes]) -> tuple[bytes, str]:
        return self.sign(key, self.registry.functions.submitBatch(list(digests)))

    def send_submission(self, raw: bytes, tx_hash: str) -> int:
        receipt = self.send(raw, tx_hash)
        events = self.registry.events.BatchSubmitted().process_receipt(receipt)
        return int(events[0]["args"]["batchId"])

    def _logs(self, event: str, from_block: int | None = None, to_block: int | str = "latest", **filters) -> list:
        start = self.deployment.block if from_block is None else max(from_block, self.deployment.block)
        return getattr(self.registry.events, event)().get_logs(from_block=start, to_block=to_block, argument_filters=filters or None)

    @staticmethod
    def _batch(entry) -> SubmittedBatch:
        args = entry["args"]
        return SubmittedBatch(int(args["batchId"]), args["contributor"], tuple(bytes(d) for d in args["digests"]), device=args["device"])

    def _submitted(self, **filters) -> list[SubmittedBatch]:
        return [self._batch(e) for e in self._logs("BatchSubmitted", **filters)]

    def pending_batches(self) -> list[SubmittedBatch]:
        head = self.head()  # one block for both queries: a batch settled in between is not taken for pending
        settled = {int(e["args"]["batchId"]) for e in self._logs("BatchSettled", to_block=head)}
        return [self._batch(e) for e in self._logs("BatchSubmitted", to_block=head) if int(e["args"]["batchId"]) not in settled]

    def submissions_of(self, contributor: str) -> list[SubmittedBatch]:
        return self._submitted(contributor=self.checksum(contributor))

    def settle(self, key, batch_id: int, accepted: list[bool], qualities_bps: list[int], reasons: list[int]) -> str:
        call = self.registry.functions.settleBatch(batch_id, bitmap(accepted), pack_qualities(qualities_bps), bytes(reasons))
        return self._send(key, call)

    @staticmethod
    def _settlement(entry) -> Settlement:
        args = entry["args"]
        words, reasons = list(args["acceptedBitmap"]), bytes(args["rejectReasons"])
        count = sum(bin(w).count("1") for w in words) + len(reasons)  # one bit per accepted clip, one reason per rejected
        return Settlement(
            batch_id=int(args["batchId"]),
            contributor=args["contributor"],
            accepted=tuple(bitmap_bits(words, count)),
            qualities_bps=tuple(unpack_qualities(args["qualities"])),
            reasons=tuple(reasons),
            reward=int(args["reward"]),
            block=int(entry["blockNumber"]),
            tx="0x" + bytes(entry["transactionHash"]).hex(),
            device=args["device"],
        )

    def settlement(self, batch_id: int) -> Settlement | None:
        logs = self._logs("BatchSettled", batchId=batch_id)
        return self._settlement(logs[0]) if logs else None

    def settlements_of(self, contributor: str) -> list[Settlement]:
        return [self._settlement(e) for e in self._logs("BatchSettled", contributor=self.checksum(contributor))]

    def paid_clips(self, from_block: int = 0) -> list[tuple[bytes, int, str]]:
        """(digest, batch id, device) of each clip accepted in a batch settled at `from_block` or later, in
        settlement order: what a validator started from nothing must refuse as already paid."""
        return [
            (digest, settlement.batch_id, batch.device)
            for batch, settlement in self.settled_batches(from_block=from_block)
            for digest, ok in zip(batch.digests, settlement.accepted, strict=True)
            if ok
        ]

    def settled_batches(self, contributor: str | None = None, from_block: int = 0) -> list[tuple[SubmittedBatch, Settlement]]:
        head = self.head()  # one block for both queries
        if from_block > head:
            return []
        filters = {"contributor": self.checksum(contributor)} if contributor else {}
        settled = [self._settlement(e) for e in self._logs("BatchSettled", from_block, head, **filters)]
        ids = [s.batch_id for s in settled]
        batches = {}
        for i in range(0, len(ids), _LOG_CHUNK):
            for entry in self._logs("BatchSubmitted", to_block=head, batchId=ids[i : i + _LOG_CHUNK]):
                batch = self._batch(entry)
                batches[batch.batch_id] = batch
        return [(batches[s.batch_id], s) for s in settled if s.batch_id in batches]

    def batch_root(self, batch_id: int) -> bytes:
        return bytes(self.registry.functions.batch(batch_id).call()[0])

    def verify_inclusion(self, batch_id: int, index: int, digest: bytes, proof: list[bytes]) -> bool:
        return bool(self.registry.functions.verify(batch_id, index, _digest(digest), [_digest(p) for p in proof]).call())

    def reward_terms(self) -> RewardTerms:
        functions = self.registry.functions
        return RewardTerms(functions.rewardPerClip().call(), functions.maxRewardPerClip().call())

    def balance_of(self, address: str) -> int:
        return self.token.functions.balanceOf(self.checksum(address)).call()

    def token_address(self) -> str:
        return self.token.address

    def checksum(self, address: str) -> str:
        try:
            return self.w3.to_checksum_address(address)
        except ValueError:
            raise ChainError(f"{address!r} is not an EVM address (0x and 40 hex digits)") from None

    def close(self) -> None:
        if self._kv is not None:
            self._kv.close()


def _digest(value: bytes) -> bytes:
    if not isinstance(value, (bytes, bytearray)) or len(value) != 32:
        raise ChainError(f"a digest is 32 bytes, not {value!r:.80}")
    return bytes(value)


def open_ledger(rpc: str, data_dir: Path) -> Web3Ledger:
    """The chain in config (`storage.chain_rpc`), else the embedded one in the data directory."""
    from web3 import Web3

    if rpc:
        w3 = Web3(Web3.HTTPProvider(rpc, request_kwargs={"timeout": 30}))
        if not w3.is_connected():
            raise ChainUnavailable(f"the chain at {rpc} is not reachable")
        return Web3Ledger(w3, data_dir / "chain" / f"deployment-{w3.eth.chain_id}.json")
    from eth_tester import EthereumTester
    from web3 import EthereumTesterProvider

    from storage.ledger.evm import open_backend

    backend, kv = open_backend(data_dir / "chain" / "embedded.sqlite")
    w3 = Web3(EthereumTesterProvider(EthereumTester(backend)))
    return Web3Ledger(w3, data_dir / "chain" / "deployment-embedded.json", embedded_kv=kv)

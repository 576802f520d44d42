"""The ledger's web3 implementation: the clip registry and its reward token on an EVM chain, through web3.py.

Two chains behind the same client: the embedded one (py-evm in this process, state in the data
directory, the default) and any JSON-RPC endpoint (a dev node, a testnet, an L2). Transactions are
signed locally with keys from encrypted keystores; nonces, gas estimates, EIP-1559 fees, receipts and
reverts are handled here, and a revert comes back as one line with the contract's reason."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from storage.ledger.base import ChainError, ChainUnavailable, Deployment, RewardTerms, Settlement, SubmittedBatch
from storage.ledger.contracts.encoding import bitmap, bitmap_bits, pack_qualities, unpack_qualities

log = logging.getLogger("knack.chain")

ARTIFACTS = Path(__file__).resolve().parent / "contracts" / "artifacts"
DEFAULT_REWARD = 10**18  # one KNACK per accepted clip of quality 1.0
DEFAULT_CAP = 10**18


def artifact(name: str) -> dict:
    return json.loads((ARTIFACTS / f"{name}.json").read_text())


class Web3Ledger:
    """A connected chain, and (once deployed) its registry and token contracts: the `Ledger` of base.py."""

    def __init__(self, w3, deployment_path: Path, embedded_kv=None):
        self.w3, self.deployment_path, self._kv = w3, deployment_path, embedded_kv
        self.embedded = embedded_kv is not None
        self._errors = {}
        for name in ("ClipRegistry", "KnackToken"):
            for item in artifact(name)["abi"]:
                if item.get("type") == "error":
                    signature = f"{item['name']}({','.join(i['type'] for i in item['inputs'])})"
                    self._errors["0x" + w3.keccak(text=signature)[:4].hex().removeprefix("0x")] = item["name"]
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

    def reason(self, exc: Exception) -> str:
        """The contract's reason for a revert, named (custom errors by name, require strings as text)."""
        data = getattr(exc, "data", None)
        if isinstance(data, dict):
            data = data.get("data")
        if isinstance(data, str) and data[:10] in self._errors:
            return self._errors[data[:10]]
        text = str(exc.args[0] if getattr(exc, "args", None) else exc)
        raw = text.removeprefix("execution reverted: ")
        if raw[:2] in ('b"', "b'"):  # the in-process chain gives the revert data as a bytes literal
            import ast

            try:
                data = ast.literal_eval(raw)
            except (ValueError, SyntaxError):
                data = b""
            if "0x" + data[:4].hex() in self._errors:
                return self._errors["0x" + data[:4].hex()]
        for selector, name in self._errors.items():
            if selector[2:] in text:
                return name
        return text.replace("execution reverted: ", "").strip() or type(exc).__name__

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
            raise ChainError(f"the registry refused it: {self.reason(exc)}") from None
        except (ConnectionError, OSError, Web3RPCError) as exc:  # before the catch-all below: a node that is down
            raise ChainUnavailable(f"the chain is not reachable: {exc}") from None
        except Exception as exc:
            if type(exc).__name__ != "TransactionFailed":  # eth-tester's revert, from the embedded chain
                raise
            raise ChainError(f"the registry refused it: {self.reason(exc)}") from None
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

    # -- set-up ------------------------------------------------------------------------------------

    def fund(self, address: str, minimum: int = 10**18) -> None:
        """Embedded chain only: tops up an account with test ether from eth-tester's funded account."""
        if not self.embedded or self.w3.eth.get_balance(address) >= minimum:
            return
        self.w3.eth.send_transaction({"from": self.w3.eth.accounts[0], "to": address, "value": 10 * minimum})

    def deploy(self, admin, validator: str, reward: int = DEFAULT_REWARD, cap: int = DEFAULT_CAP) -> Deployment:
        """Deploys the registry (which deploys its token) with `admin` as admin and `validator` as validator."""
        self.fund(admin.address)
        spec = artifact("ClipRegistry")
        factory = self.w3.eth.contract(abi=spec["abi"], bytecode=spec["bytecode"])
        receipt = self.transact(admin, factory.constructor(admin.address, validator, reward, cap))
        registry = self._contract("ClipRegistry", receipt["contractAddress"])
        self.deployment = Deployment(self.w3.eth.chain_id, receipt["contractAddress"], registry.functions.token().call(), receipt["blockNumber"])
        self.deployment.save(self.deployment_path)
        return self.deployment

    # -- the Ledger seam -----------------------------------------------------------------------------

    def sign_submission(self, key, digests: list[bytes]) -> tuple[bytes, str]:
        return self.sign(key, self.registry.functions.submitBatch(list(digests)))

    def send_submission(self, raw: bytes, tx_hash: str) -> int:
        receipt = self.send(raw, tx_hash)
        events = self.registry.events.BatchSubmitted().process_receipt(receipt)
        return int(events[0]["args"]["batchId"])

    def _submitted(self, **filters) -> list[SubmittedBatch]:
        logs = self.registry.events.BatchSubmitted().get_logs(from_block=self.deployment.block, argument_filters=filters or None)
        return [SubmittedBatch(int(e["args"]["batchId"]), e["args"]["contributor"], tuple(bytes(d) for d in e["args"]["digests"])) for e in logs]

    def pending_batches(self) -> list[SubmittedBatch]:
        registry = self.registry
        return [b for b in self._submitted() if not registry.functions.batch(b.batch_id).call()[3]]

    def submissions_of(self, contributor: str) -> list[SubmittedBatch]:
        return self._submitted(contributor=self.checksum(contributor))

    def settle(self, key, batch_id: int, accepted: list[bool], qualities_bps: list[int], reasons: list[int]) -> str:
        self.fund(key.address)
        call = self.registry.functions.settleBatch(batch_id, bitmap(accepted), pack_qualities(qualities_bps), bytes(reasons))
        return "0x" + bytes(self.transact(key, call)["transactionHash"]).hex()

    def _settlement(self, entry) -> Settlement:
        args = entry["args"]
        batch_id = int(args["batchId"])
        count = self.registry.functions.batch(batch_id).call()[2]
        return Settlement(
            batch_id=batch_id,
            contributor=args["contributor"],
            accepted=tuple(bitmap_bits(list(args["acceptedBitmap"]), count)),
            qualities_bps=tuple(unpack_qualities(args["qualities"])),
            reasons=tuple(args["rejectReasons"]),
            reward=int(args["reward"]),
            block=int(entry["blockNumber"]),
            tx="0x" + bytes(entry["transactionHash"]).hex(),
        )

    def settlement(self, batch_id: int) -> Settlement | None:
        logs = self.registry.events.BatchSettled().get_logs(from_block=self.deployment.block, argument_filters={"batchId": batch_id})
        return self._settlement(logs[0]) if logs else None

    def settlements_of(self, contributor: str) -> list[Settlement]:
        logs = self.registry.events.BatchSettled().get_logs(from_block=self.deployment.block, argument_filters={"contributor": self.checksum(contributor)})
        return [self._settlement(e) for e in logs]

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

"""Gas of ClipRegistry (batched) against NaiveRegistry (the benchmark reference: one transaction per clip),
measured from receipts' gasUsed on eth-tester's in-process py-evm (Prague). All clips accepted at quality
10000. Per accepted clip = (submitBatch by a registered device + settleBatch incl. the mint to the device's
contributor) / clips. Registering a device (once per device) is reported apart.

"first mint" = the contributor has never held KNACK (its balance slot goes 0 -> nonzero); "later mint" =
it has. Both after a warm-up, so the registry's batch counter and the token's totalSupply are already
nonzero (the steady state of a live registry).

    python -m storage.ledger.contracts.gas [--json]      (bench/gas.py can call measure())
"""

from __future__ import annotations

import hashlib
import json
import sys

from . import load_artifact
from .encoding import bitmap, registration_struct_hash
from .encoding import pack_qualities as qualities

SIZES = (1, 16, 64, 256)
REWARD = 10**18
MAX_REWARD = 2 * 10**18
NO_POLICY = bytes(32)
STRIKES = (3, 7 * 24 * 3600)  # max strikes, window (s); the mask is storage.ledger.reasons.strike_mask()


def chain():
    """A fresh eth-tester chain: (w3, tester, accounts)."""
    from web3 import EthereumTesterProvider, Web3

    provider = EthereumTesterProvider()
    w3 = Web3(provider)
    return w3, provider.ethereum_tester, w3.eth.accounts


def deploy(w3, name: str, *args, sender=None):
    art = load_artifact(name)
    factory = w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
    tx = factory.constructor(*args).transact({"from": sender or w3.eth.accounts[0]})
    receipt = w3.eth.wait_for_transaction_receipt(tx)
    return w3.eth.contract(address=receipt.contractAddress, abi=art["abi"]), receipt


def token_of(w3, registry):
    return w3.eth.contract(address=registry.functions.token().call(), abi=load_artifact("KnackToken")["abi"])


def digests(n: int, salt: str = "") -> list[bytes]:
    return [hashlib.sha256(f"{salt}clip {i}".encode()).digest() for i in range(n)]


def deploy_registry(w3, admin, validator):
    from storage.ledger.reasons import strike_mask

    return deploy(w3, "ClipRegistry", admin, validator, REWARD, MAX_REWARD, NO_POLICY, *STRIKES, strike_mask())


def new_key(w3, tester, seed: str):
    """A funded account that has never held KNACK, as a collector.identity.DeviceKey."""
    from collector.identity import DeviceKey

    key = hashlib.sha256(seed.encode()).digest()
    address = tester.add_account("0x" + key.hex())
    w3.eth.wait_for_transaction_receipt(w3.eth.send_transaction({"from": w3.eth.accounts[0], "to": address, "value": 10**20}))
    return DeviceKey(address, key)


def new_account(w3, tester, seed: str) -> str:
    return new_key(w3, tester, seed).address


def register(w3, registry, device, contributor, relayer) -> int:
    """Registers `device` to `contributor` (DeviceKeys), relayed by `relayer`; returns the gas used."""
    from collector.identity import SigningDomain

    deadline = w3.eth.get_block("latest")["timestamp"] + 3600
    nonce = registry.functions.nonces(contributor.address).call()
    digest = SigningDomain(w3.eth.chain_id, registry.address).hash(registration_struct_hash(device.address, contributor.address, nonce, deadline))
    call = registry.functions.registerDevice(device.address, contributor.address, deadline, contributor.sign_hash(digest), device.sign_hash(digest))
    return _gas(w3, call.transact({"from": relayer}))


def new_device(w3, tester, registry, seed: str, relayer) -> tuple[str, str, int]:
    """A registered device and its contributor (neither has held KNACK): (device, contributor, registration gas)."""
    contributor = new_key(w3, tester, f"{seed} contributor")
    device = new_key(w3, tester, f"{seed} device")
    return device.address, contributor.address, register(w3, registry, device, contributor, relayer)


def _gas(w3, tx_hash) -> int:
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash)
    assert receipt.status == 1
    return receipt.gasUsed


def measure_batch(w3, registry, device, validator, n: int, salt: str) -> dict:
    ds = digests(n, salt)
    submit = _gas(w3, registry.functions.submitBatch(ds).transact({"from": device}))
    batch_id = registry.functions.batchCount().call() - 1
    settle = _gas(
        w3,
        registry.functions.settleBatch(batch_id, bitmap([True] * n), qualities([10000] * n), b"").transact({"from": validator}),
    )
    return {"submit": submit, "settle": settle, "per_clip": (submit + settle) / n}


def measure(sizes=SIZES) -> dict:
    w3, tester, accts = chain()
    admin, validator, relayer = accts[0], accts[1], accts[2]
    registry, deployment = deploy_registry(w3, admin, validator)
    warm, _, _ = new_device(w3, tester, registry, "warm-up", relayer)
    measure_batch(w3, registry, warm, validator, 1, "warm-up")  # batchCount and totalSupply now nonzero
    out = {"deploy_registry_and_token": deployment.gasUsed, "register_device": 0, "batched": {}, "naive": {}}
    for n in sizes:
        device, _, out["register_device"] = new_device(w3, tester, registry, f"{n}", relayer)
        first = measure_batch(w3, registry, device, validator, n, f"{n} first ")
        later = measure_batch(w3, registry, device, validator, n, f"{n} later ")
        out["batched"][n] = {"first_mint": first, "later_mint": later}

    naive, deployment = deploy(w3, "NaiveRegistry", validator, REWARD, MAX_REWARD)
    out["deploy_naive_and_token"] = deployment.gasUsed
    warm = new_account(w3, tester, "naive warm-up")
    _gas(w3, naive.functions.recordClip(warm, digests(1, "naive warm")[0], 10000).transact({"from": validator}))
    who = new_account(w3, tester, "naive contributor")
    ds = digests(3, "naive ")
    gas = [_gas(w3, naive.functions.recordClip(who, d, 10000).transact({"from": validator})) for d in ds]
    out["naive"] = {"first_mint": gas[0], "later_mint": gas[1]}
    return out


def table(result: dict) -> str:
    rows = ["clips  first mint: submit+settle  gas/clip | later mint: submit+settle  gas/clip"]
    for n, r in result["batched"].items():
        first, later = r["first_mint"], r["later_mint"]
        rows.append(
            f"{n:5d}  {first['submit']:>9,d} + {first['settle']:>7,d}  {first['per_clip']:>8,.0f} |"
            f" {later['submit']:>9,d} + {later['settle']:>7,d}  {later['per_clip']:>8,.0f}"
        )
    nv = result["naive"]
    rows.append(f"naive (1 tx per clip): first mint {nv['first_mint']:,d}  later mint {nv['later_mint']:,d} gas/clip")
    rows.append(f"registering a device (once, relayed): {result['register_device']:,d} gas")
    return "\n".join(rows)


if __name__ == "__main__":
    res = measure()
    print(json.dumps(res, indent=2) if "--json" in sys.argv else table(res))

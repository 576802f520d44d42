"""The reward contracts (storage/ledger/contracts): ClipRegistry and KnackToken on eth-tester's in-process py-evm
(Prague) through web3.py, from the committed artifacts; no Node needed except for the rebuild check. Devices,
their contributors and strikes: tests/test_registry_devices.py."""

from __future__ import annotations

import ast
import hashlib
import json
import random
import re
import shutil
import subprocess

import pytest

pytest.importorskip("eth_tester", reason="needs web3[tester] (eth-tester + py-evm)")
pytest.importorskip("eth", reason="needs py-evm (web3[tester])")

from eth_abi import encode  # noqa: E402
from eth_utils import keccak  # noqa: E402
from web3 import EthereumTesterProvider, Web3  # noqa: E402
from web3.logs import DISCARD  # noqa: E402

from collector.identity import DeviceKey, SigningDomain  # noqa: E402
from storage.ledger.contracts import ARTIFACTS, CONTRACTS, HERE, SOURCES, load_artifact, merkle  # noqa: E402
from storage.ledger.contracts.encoding import bitmap, pack_qualities, registration_struct_hash  # noqa: E402
from storage.ledger.reasons import strike_mask  # noqa: E402

REWARD = 10**18  # per clip at quality 10000
CAP = 2 * 10**18
ZERO = "0x" + "00" * 20
POLICY = hashlib.sha256(b"models and policy").digest()
MAX_STRIKES, WINDOW = 3, 7 * 24 * 3600


def digests(n: int, salt: str = "") -> list[bytes]:
    return [hashlib.sha256(f"{salt}clip {i}".encode()).digest() for i in range(n)]


def expected_reward(qualities, per=REWARD, cap=CAP) -> int:
    return sum(min(per * q // 10000, cap) for q in qualities)


class Chain:
    """A registry and its token; `device` is registered to `contributor`, `device2` to `contributor2`."""

    def __init__(self):
        provider = EthereumTesterProvider()
        self.w3 = Web3(provider)
        self.tester = provider.ethereum_tester
        self.keys = [DeviceKey(a, k.to_bytes()) for a, k in zip(self.w3.eth.accounts, self.tester.backend.account_keys, strict=True)]
        self.admin, self.validator, self.device, self.device2, self.stranger, self.contributor, self.contributor2, self.relayer = self.w3.eth.accounts[:8]
        self.registry = self.deploy("ClipRegistry", self.admin, self.validator, REWARD, CAP, POLICY, MAX_STRIKES, WINDOW, strike_mask())
        self.deployed = self.deploy_receipt
        self.token = self.w3.eth.contract(address=self.registry.functions.token().call(), abi=load_artifact("KnackToken")["abi"])
        self.register(self.device, self.contributor)
        self.register(self.device2, self.contributor2)

    def key(self, address: str) -> DeviceKey:
        return next(k for k in self.keys if k.address == address)

    def register(self, device: str, contributor: str):
        deadline = self.w3.eth.get_block("latest")["timestamp"] + 3600
        nonce = self.registry.functions.nonces(contributor).call()
        digest = SigningDomain(self.w3.eth.chain_id, self.registry.address).hash(registration_struct_hash(device, contributor, nonce, deadline))
        signatures = (self.key(contributor).sign_hash(digest), self.key(device).sign_hash(digest))
        return self.send(self.registry.functions.registerDevice(device, contributor, deadline, *signatures), self.relayer)

    def deploy(self, name, *args):
        art = load_artifact(name)
        tx = self.w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"]).constructor(*args).transact({"from": self.admin})
        receipt = self.w3.eth.wait_for_transaction_receipt(tx)
        assert receipt.status == 1
        self.deploy_receipt = receipt
        return self.w3.eth.contract(address=receipt.contractAddress, abi=art["abi"])

    def send(self, fn, sender):
        receipt = self.w3.eth.wait_for_transaction_receipt(fn.transact({"from": sender}))
        assert receipt.status == 1
        return receipt

    def submit(self, ds, sender=None):
        receipt = self.send(self.registry.functions.submitBatch(ds), sender or self.device)
        return self.registry.functions.batchCount().call() - 1, receipt

    def settle(self, batch_id, accepted, qualities, reasons=b"", sender=None):
        fn = self.registry.functions.settleBatch(batch_id, bitmap(accepted), pack_qualities(qualities), reasons)
        return self.send(fn, sender or self.validator)


@pytest.fixture(scope="module")
def _chain():
    return Chain()


@pytest.fixture
def chain(_chain):
    """The module's chain, rolled back to its deployed state after each test."""
    snapshot = _chain.tester.take_snapshot()
    yield _chain
    _chain.tester.revert_to_snapshot(snapshot)


def events(contract, name: str, receipt) -> tuple:
    """`contract`'s `name` events in `receipt` (other contracts' logs skipped quietly)."""
    return getattr(contract.events, name)().process_receipt(receipt, errors=DISCARD)


def revert_data(fn, sender) -> bytes:
    """The revert data of calling `fn` from `sender` (fails the test if it does not revert)."""
    try:
        fn.call({"from": sender})
    except Exception as e:  # eth-tester's TransactionFailed or web3's ContractCustomError
        data = getattr(e, "data", None)
        if isinstance(data, str) and data.startswith("0x"):
            return bytes.fromhex(data[2:])
        m = re.search(r"""(b'.*'|b".*")""", str(e), re.S)
        assert m, f"no revert data in {e!r}"
        return ast.literal_eval(m.group(1))
    raise AssertionError("the call did not revert")


def custom_error(contract, name: str, *args) -> bytes:
    entry = next(e for e in contract.abi if e["type"] == "error" and e["name"] == name)
    types = [i["type"] for i in entry["inputs"]]
    return keccak(text=f"{name}({','.join(types)})")[:4] + encode(types, list(args))


def assert_reverts(contract, fn, sender, name, *args):
    assert revert_data(fn, sender) == custom_error(contract, name, *args)


# ------------------------------------------------------------------ artifacts


def source_hash(art: dict) -> str:
    """build.mjs's sourceHash, recomputed from src/*.sol and the artifact's compiler settings."""
    sources = {f"src/{p.name}": hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(SOURCES.glob("*.sol"))}
    doc = {
        "compiler": art["compiler"]["version"],
        "dependencies": art["dependencies"],
        "settings": art["compiler"]["settings"],
        "sources": sources,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@pytest.mark.parametrize("name", CONTRACTS)
def test_artifact_matches_sources(name):
    art = load_artifact(name)
    assert art["contractName"] == name
    assert art["bytecode"].startswith("0x6") and len(art["deployedBytecode"]) > 100
    assert source_hash(art) == art["sourceHash"], (
        f"storage/ledger/contracts/src or the settings changed since artifacts/{name}.json was built: "
        "run `npm ci && node build.mjs` in storage/ledger/contracts and commit artifacts/"
    )
    package = json.loads((HERE / "package.json").read_text())["dependencies"]
    assert art["compiler"]["version"].startswith(package["solc"] + "+")
    assert art["dependencies"] == {"@openzeppelin/contracts": package["@openzeppelin/contracts"]}
    assert art["compiler"]["settings"]["evmVersion"] == "prague"


def test_rebuild_is_byte_identical(tmp_path):
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the artifacts are checked against the sources' hash only")
    for pkg in ("solc", "@openzeppelin/contracts"):
        if not (HERE / "node_modules" / pkg / "package.json").exists():
            pytest.skip(f"storage/ledger/contracts/node_modules/{pkg} is absent (run `npm ci` in storage/ledger/contracts)")
    subprocess.run([node, str(HERE / "build.mjs"), "--out", str(tmp_path)], check=True, capture_output=True, timeout=240)
    built = sorted(p.name for p in tmp_path.glob("*.json"))
    assert built == sorted(f"{n}.json" for n in CONTRACTS)
    for name in built:
        fresh = json.loads((tmp_path / name).read_text())
        committed = json.loads((ARTIFACTS / name).read_text())
        assert fresh["bytecode"] == committed["bytecode"], f"{name}: bytecode differs from a fresh build"
        assert fresh["deployedBytecode"] == committed["deployedBytecode"], f"{name}: deployed bytecode differs"
        assert (tmp_path / name).read_bytes() == (ARTIFACTS / name).read_bytes(), f"{name} differs"


# ------------------------------------------------------------------ token and roles


def test_token_metadata_and_sole_minter(chain):
    t = chain.token.functions
    assert (t.name().call(), t.symbol().call(), t.decimals().call()) == ("Knack Reward", "KNACK", 18)
    assert t.minter().call() == chain.registry.address
    assert t.totalSupply().call() == 0
    for who in (chain.admin, chain.validator, chain.device, chain.contributor):
        assert_reverts(chain.token, t.mint(who, 1), who, "NotMinter", who)


def test_roles_at_deployment(chain):
    r = chain.registry.functions
    admin_role = b"\x00" * 32
    validator_role = keccak(text="VALIDATOR_ROLE")
    assert r.VALIDATOR_ROLE().call() == validator_role
    assert r.hasRole(admin_role, chain.admin).call()
    assert r.hasRole(validator_role, chain.validator).call()
    assert not r.hasRole(validator_role, chain.admin).call()
    assert not r.hasRole(admin_role, chain.validator).call()
    granted = events(chain.registry, "RoleGranted", chain.deployed)
    assert {(e.args.role, e.args.account) for e in granted} == {
        (admin_role, chain.admin),
        (validator_role, chain.validator),
    }
    changed = events(chain.registry, "RewardChanged", chain.deployed)
    assert [(e.args.rewardPerClip, e.args.maxRewardPerClip) for e in changed] == [(REWARD, CAP)]
    assert (r.rewardPerClip().call(), r.maxRewardPerClip().call(), r.batchCount().call()) == (REWARD, CAP, 0)


def test_policy_and_strike_rules_at_deployment(chain):
    r = chain.registry.functions
    assert r.policyDigest().call() == POLICY
    assert [e.args.digest for e in events(chain.registry, "PolicyChanged", chain.deployed)] == [POLICY]
    assert r.strikeRules().call() == [MAX_STRIKES, WINDOW, strike_mask()]
    (ev,) = events(chain.registry, "StrikeRulesChanged", chain.deployed)
    assert (ev.args.maxStrikes, ev.args.window, ev.args.reasonMask) == (MAX_STRIKES, WINDOW, strike_mask())


def test_only_admin_sets_reward_and_roles(chain):
    r = chain.registry.functions
    admin_role = b"\x00" * 32
    validator_role = keccak(text="VALIDATOR_ROLE")
    for who in (chain.validator, chain.device, chain.contributor):
        assert_reverts(chain.registry, r.setReward(5, 5), who, "AccessControlUnauthorizedAccount", who, admin_role)
        assert_reverts(chain.registry, r.grantRole(validator_role, who), who, "AccessControlUnauthorizedAccount", who, admin_role)
        assert_reverts(
            chain.registry,
            r.revokeRole(validator_role, chain.validator),
            who,
            "AccessControlUnauthorizedAccount",
            who,
            admin_role,
        )
    receipt = chain.send(r.setReward(3 * 10**18, 10**18), chain.admin)
    (ev,) = events(chain.registry, "RewardChanged", receipt)
    assert (ev.args.rewardPerClip, ev.args.maxRewardPerClip) == (3 * 10**18, 10**18)
    assert (r.rewardPerClip().call(), r.maxRewardPerClip().call()) == (3 * 10**18, 10**18)
    assert_reverts(chain.registry, r.setReward(2**128, 1), chain.admin, "RewardTooLarge")


def test_validator_role_grant_and_revoke(chain):
    r = chain.registry.functions
    validator_role = keccak(text="VALIDATOR_ROLE")
    batch_id, _ = chain.submit(digests(3))
    settle = r.settleBatch(batch_id, [0b111], pack_qualities([10000] * 3), b"")
    for who in (chain.admin, chain.device, chain.contributor, chain.stranger):
        assert_reverts(chain.registry, settle, who, "AccessControlUnauthorizedAccount", who, validator_role)

    receipt = chain.send(r.grantRole(validator_role, chain.stranger), chain.admin)
    (ev,) = events(chain.registry, "RoleGranted", receipt)
    assert (ev.args.role, ev.args.account, ev.args.sender) == (validator_role, chain.stranger, chain.admin)
    receipt = chain.send(r.revokeRole(validator_role, chain.validator), chain.admin)
    (ev,) = events(chain.registry, "RoleRevoked", receipt)
    assert (ev.args.role, ev.args.account, ev.args.sender) == (validator_role, chain.validator, chain.admin)
    assert_reverts(chain.registry, settle, chain.validator, "AccessControlUnauthorizedAccount", chain.validator, validator_role)
    receipt = chain.send(settle, chain.stranger)
    (ev,) = events(chain.registry, "BatchSettled", receipt)
    assert ev.args.validator == chain.stranger


# ------------------------------------------------------------------ submission and the Merkle tree


def test_submit_batch_stores_root_and_emits_digests(chain):
    ds = digests(7, "a")
    batch_id, receipt = chain.submit(ds)
    assert batch_id == 0
    (ev,) = events(chain.registry, "BatchSubmitted", receipt)
    assert ev.args.batchId == 0
    assert (ev.args.device, ev.args.contributor) == (chain.device, chain.contributor)
    assert ev.args.root == merkle.root(ds)
    assert list(ev.args.digests) == ds
    assert chain.registry.functions.batch(0).call() == [merkle.root(ds), chain.device, 7, False]
    batch_id, receipt = chain.submit(digests(2, "b"), chain.device2)
    assert batch_id == 1 and chain.registry.functions.batchCount().call() == 2
    assert chain.registry.functions.batch(1).call()[1:] == [chain.device2, 2, False]
    assert chain.registry.functions.batch(2).call() == [b"\x00" * 32, ZERO, 0, False]


def test_submit_batch_size_limits(chain):
    r = chain.registry.functions
    assert_reverts(chain.registry, r.submitBatch([]), chain.device, "EmptyBatch")
    assert_reverts(chain.registry, r.submitBatch(digests(257)), chain.device, "BatchTooLarge", 257, 256)
    batch_id, _ = chain.submit(digests(256))
    assert r.batch(batch_id).call()[2] == 256


def test_contract_root_matches_python(chain):
    sizes = list(range(1, 40)) + [63, 64, 65, 100, 127, 128, 129, 255, 256]
    for n in sizes:
        ds = digests(n, f"r{n}")
        assert chain.registry.functions.merkleRoot(ds).call() == merkle.root(ds), n
    # and the stored root, for a few sizes that take each path (partial block, whole blocks, both)
    for n in (1, 7, 16, 33, 256):
        ds = digests(n, f"s{n}")
        batch_id, _ = chain.submit(ds)
        assert chain.registry.functions.batch(batch_id).call()[0] == merkle.root(ds)


def test_python_merkle_small_trees_by_hand():
    ds = digests(3)
    l0, l1, l2 = (merkle.leaf(i, d) for i, d in enumerate(ds))
    assert l0 == keccak((0).to_bytes(32, "big") + ds[0])
    pair = lambda a, b: keccak(min(a, b) + max(a, b))  # noqa: E731
    assert merkle.root(ds[:1]) == l0
    assert merkle.root(ds) == pair(pair(l0, l1), l2)  # the odd leaf is promoted, not duplicated
    assert merkle.proof(ds, 2) == [pair(l0, l1)]
    assert merkle.proof(ds, 0) == [l1, l2]
    with pytest.raises(ValueError):
        merkle.root([])


def test_verify_every_clip_of_an_odd_batch(chain):
    ds = digests(7, "verify")
    batch_id, _ = chain.submit(ds)
    root = merkle.root(ds)
    verify = chain.registry.functions.verify
    for i, d in enumerate(ds):
        proof = merkle.proof(ds, i)
        assert merkle.verify(root, i, d, proof)
        assert verify(batch_id, i, d, proof).call(), i
        # a wrong index, digest or proof, or another batch, is refused by both sides
        wrong_index = (i + 1) % 7
        assert not verify(batch_id, wrong_index, d, proof).call()
        assert not merkle.verify(root, wrong_index, d, proof)
        other = ds[(i + 1) % 7]
        assert not verify(batch_id, i, other, proof).call()
        assert not merkle.verify(root, i, other, proof)
        bad = list(proof)
        bad[0] = bytes(31) + b"\x01"
        assert not verify(batch_id, i, d, bad).call()
        assert not merkle.verify(root, i, d, bad)
        assert not verify(batch_id, i, d, proof[:-1]).call()
        assert not verify(batch_id + 1, i, d, proof).call()
    # index past the batch's end, even with a proof that would hash right for a longer batch
    longer = ds + digests(1, "extra")
    assert not verify(batch_id, 7, longer[7], merkle.proof(longer, 7)).call()


def test_verify_agrees_on_larger_batches(chain):
    rng = random.Random(7)
    for n in (2, 16, 17, 100, 256):
        ds = digests(n, f"v{n}")
        batch_id, _ = chain.submit(ds)
        for i in sorted(rng.sample(range(n), min(n, 6))):
            assert chain.registry.functions.verify(batch_id, i, ds[i], merkle.proof(ds, i)).call()


def test_verify_still_proves_each_clip_once_the_batch_is_settled(chain):
    ds = digests(7, "settled verify")
    batch_id, _ = chain.submit(ds)
    chain.settle(batch_id, [True] * 7, [10000] * 7)
    verify = chain.registry.functions.verify
    for i, d in enumerate(ds):
        assert verify(batch_id, i, d, merkle.proof(ds, i)).call(), i
        assert not verify(batch_id, i, ds[(i + 1) % 7], merkle.proof(ds, i)).call()


@pytest.mark.parametrize("settled", [False, True])
def test_an_inner_node_never_passes_as_a_clip(chain, settled):
    """An inner node keccak(a || b) is the leaf of "clip number a with digest b": only the index bound (the
    count while pending, 256 once settled, a hash being below 256 with odds 2**-248) tells them apart."""
    ds = digests(7, "inner")
    batch_id, _ = chain.submit(ds)
    if settled:
        chain.settle(batch_id, [True] * 7, [10000] * 7)
    a, b = sorted((merkle.leaf(0, ds[0]), merkle.leaf(1, ds[1])))
    forged = merkle.proof(ds, 0)[1:]  # from the pair's parent up
    assert merkle.verify(merkle.root(ds), int.from_bytes(a, "big"), b, forged)  # the hashes alone accept it
    assert not chain.registry.functions.verify(batch_id, int.from_bytes(a, "big"), b, forged).call()


# ------------------------------------------------------------------ settlement


def test_settle_mints_once_to_the_devices_contributor(chain):
    ds = digests(7, "settle")
    batch_id, _ = chain.submit(ds)
    accepted = [True, False, True, True, False, True, True]
    qualities = [10000, 5000, 1, 0, 9999]
    reasons = bytes([3, 7])
    receipt = chain.settle(batch_id, accepted, qualities, reasons)
    reward = expected_reward(qualities)
    assert chain.token.functions.balanceOf(chain.contributor).call() == reward
    assert chain.token.functions.totalSupply().call() == reward
    assert chain.token.functions.balanceOf(chain.device).call() == 0
    assert chain.token.functions.balanceOf(chain.validator).call() == 0
    (ev,) = events(chain.registry, "BatchSettled", receipt)
    args = ev.args
    assert (args.batchId, args.contributor, args.device, args.validator) == (batch_id, chain.contributor, chain.device, chain.validator)
    assert args.reward == reward
    assert list(args.acceptedBitmap) == bitmap(accepted)
    assert args.qualities == pack_qualities(qualities)
    assert args.rejectReasons == reasons
    transfers = events(chain.token, "Transfer", receipt)
    assert [(t.args["from"], t.args.to, t.args.value) for t in transfers] == [(ZERO, chain.contributor, reward)]


def test_a_settled_batch_keeps_its_root_and_forgets_its_device_and_count(chain):
    ds = digests(7, "forget")
    batch_id, _ = chain.submit(ds)
    chain.settle(batch_id, [True] * 7, [10000] * 7)
    assert chain.registry.functions.batch(batch_id).call() == [merkle.root(ds), ZERO, 0, True]


def test_double_settle_reverts(chain):
    batch_id, _ = chain.submit(digests(4))
    chain.settle(batch_id, [True] * 4, [10000] * 4)
    again = chain.registry.functions.settleBatch(batch_id, [0b1111], pack_qualities([10000] * 4), b"")
    assert_reverts(chain.registry, again, chain.validator, "AlreadySettled", batch_id)
    assert chain.token.functions.balanceOf(chain.contributor).call() == 4 * REWARD


def test_unknown_batch_reverts(chain):
    r = chain.registry.functions
    for batch_id in (0, 1, 2**256 - 1):
        assert_reverts(chain.registry, r.settleBatch(batch_id, [1], pack_qualities([10000]), b""), chain.validator, "UnknownBatch", batch_id)
    chain.submit(digests(1))
    assert_reverts(chain.registry, r.settleBatch(1, [1], pack_qualities([10000]), b""), chain.validator, "UnknownBatch", 1)
    assert chain.token.functions.totalSupply().call() == 0


def test_quality_above_10000_reverts(chain):
    batch_id, _ = chain.submit(digests(40))
    r = chain.registry.functions
    for qualities, position, bad in (
        ([10001] + [10000] * 39, 0, 10001),
        ([10000] * 20 + [65535] + [0] * 19, 20, 65535),
        ([0] * 39 + [32768], 39, 32768),
        ([0] * 17 + [10000, 10002] + [0] * 21, 18, 10002),
    ):
        fn = r.settleBatch(batch_id, bitmap([True] * 40), pack_qualities(qualities), b"")
        assert_reverts(chain.registry, fn, chain.validator, "QualityTooHigh", position, bad)
    # the same check on the path for a reward that is not a multiple of 10000
    chain.send(r.setReward(12345, CAP), chain.admin)
    fn = r.settleBatch(batch_id, bitmap([True] * 40), pack_qualities([10000] * 39 + [10001]), b"")
    assert_reverts(chain.registry, fn, chain.validator, "QualityTooHigh", 39, 10001)


def test_reward_never_above_the_cap(chain):
    r = chain.registry.functions
    chain.send(r.setReward(3 * 10**18, 2 * 10**18), chain.admin)
    qualities = [10000, 7000, 6666, 5000, 0, 1]
    batch_id, _ = chain.submit(digests(len(qualities)))
    receipt = chain.settle(batch_id, [True] * len(qualities), qualities)
    reward = expected_reward(qualities, 3 * 10**18, 2 * 10**18)
    assert reward == 2 * 10**18 + 2 * 10**18 + 2 * 10**18 - 2 * 10**14 + 15 * 10**17 + 0 + 3 * 10**14
    assert chain.token.functions.balanceOf(chain.contributor).call() == reward
    (ev,) = events(chain.registry, "BatchSettled", receipt)
    assert ev.args.reward == reward <= len(qualities) * r.maxRewardPerClip().call()


@pytest.mark.parametrize("per,cap", [(REWARD, CAP), (REWARD, REWARD), (12345, 10**6), (10**18 + 1, 10**18), (0, CAP)])
def test_reward_formula_random(chain, per, cap):
    r = chain.registry.functions
    chain.send(r.setReward(per, cap), chain.admin)
    rng = random.Random(per ^ cap)
    total = 0
    for n in (1, 15, 16, 17, 64, 200, 256):
        accepted = [rng.random() < 0.8 for _ in range(n)]
        qualities = [rng.choice([0, 1, 9999, 10000, rng.randrange(10001)]) for a in accepted if a]
        reasons = bytes(rng.randrange(256) for a in accepted if not a)
        batch_id, _ = chain.submit(digests(n, f"{per}{n}"))
        receipt = chain.settle(batch_id, accepted, qualities, reasons)
        (ev,) = events(chain.registry, "BatchSettled", receipt)
        assert ev.args.reward == expected_reward(qualities, per, cap), n
        assert ev.args.rejectReasons == reasons and ev.args.qualities == pack_qualities(qualities)
        total += ev.args.reward
    assert chain.token.functions.balanceOf(chain.contributor).call() == total


def test_full_batch_all_accepted(chain):
    batch_id, _ = chain.submit(digests(256, "full"))
    receipt = chain.settle(batch_id, [True] * 256, [10000] * 256)
    (ev,) = events(chain.registry, "BatchSettled", receipt)
    assert (ev.args.reward, ev.args.rejectReasons) == (256 * REWARD, b"")
    assert list(ev.args.acceptedBitmap) == [2**256 - 1]
    assert chain.token.functions.balanceOf(chain.contributor).call() == 256 * REWARD


def test_all_rejected_settles_without_minting(chain):
    batch_id, _ = chain.submit(digests(3))
    receipt = chain.settle(batch_id, [False] * 3, [], bytes([1, 2, 3]))
    (ev,) = events(chain.registry, "BatchSettled", receipt)
    assert (list(ev.args.acceptedBitmap), ev.args.qualities, ev.args.rejectReasons, ev.args.reward) == ([0], b"", bytes([1, 2, 3]), 0)
    assert events(chain.token, "Transfer", receipt) == ()
    assert chain.registry.functions.batch(batch_id).call()[3] is True


def test_settle_argument_checks(chain):
    r = chain.registry.functions
    batch_id, _ = chain.submit(digests(5))
    v = chain.validator
    cases = [
        (([], b"", bytes(5)), "BadBitmap", (1, 0)),
        (([0, 0], b"", bytes(5)), "BadBitmap", (1, 2)),
        (([0b100000], pack_qualities([1]), bytes(5)), "BitBeyondCount", (5,)),
        (([0b11], pack_qualities([1]), bytes(3)), "QualitiesLength", (4, 2)),
        (([0b11], pack_qualities([1, 2, 3]), bytes(3)), "QualitiesLength", (4, 6)),
        (([0b11], pack_qualities([1, 2]), bytes(2)), "RejectReasonsLength", (3, 2)),
        (([0b11], pack_qualities([1, 2]) + b"\x00", bytes(3)), "QualitiesLength", (4, 5)),
    ]
    for (words, qualities, reasons), name, args in cases:
        assert_reverts(chain.registry, r.settleBatch(batch_id, words, qualities, reasons), v, name, *args)
    assert r.batch(batch_id).call()[3] is False


def test_gas_per_clip_target(chain):
    """Under 3,000 gas per accepted clip for a batch of 64 (submission by a registered device + settlement +
    mint to its contributor), once the contributor holds KNACK; the numbers of storage/ledger/contracts/gas.py."""
    chain.submit(digests(1, "warm"), chain.device2)
    chain.settle(0, [True], [10000])  # batch counter and totalSupply nonzero, as on a live registry
    per_clip = []
    for salt in ("first", "later"):
        ds = digests(64, salt)
        batch_id, submitted = chain.submit(ds)
        settled = chain.settle(batch_id, [True] * 64, [10000] * 64)
        per_clip.append((submitted.gasUsed + settled.gasUsed) / 64)
    first, later = per_clip
    assert later < 3000, per_clip
    assert first < later + 17_100 / 64 + 1  # a first mint costs one zero-to-nonzero balance slot more

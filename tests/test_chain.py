"""The chain flow on the embedded EVM: deploy, submit pinned clips in batches, validate by CID, settle,
read rewards; state that survives the process; a crash between signing and sending; reverts in words."""

import json
import os
import subprocess
import sys

import pytest

from storage.content.ipfs import EmbeddedStore
from storage.ledger.base import ChainError
from storage.ledger.reasons import Reason
from storage.ledger.rewards import rewards_view
from storage.ledger.web3_ledger import ARTIFACTS, open_ledger
from storage.outbox.db import Outbox
from storage.outbox.pinner import enqueue_all, pin_due
from storage.outbox.submitter import submit_due, sync_settlements
from storage.validator import Validator
from tests.test_outbox import ACCEPTED, noise_frames

pytestmark = pytest.mark.skipif(
    not (ARTIFACTS / "ClipRegistry.json").exists(), reason="the contract artifacts are not built yet (storage/ledger/contracts/artifacts)"
)


@pytest.fixture
def validator_key(tmp_path_factory):
    from collector.identity import load_or_create

    key, _ = load_or_create(tmp_path_factory.mktemp("validator") / "key.json", "v", kdf="pbkdf2", iterations=1000)
    return key


@pytest.fixture
def contributor_key(tmp_path_factory):
    from collector.identity import load_or_create

    key, _ = load_or_create(tmp_path_factory.mktemp("contributor") / "key.json", "c", kdf="pbkdf2", iterations=1000)
    return key


@pytest.fixture
def world(tmp_path, make_clip, device_key, validator_key, contributor_key):
    """Accepted clips signed for the network and pinned in the embedded store, a fresh embedded chain with the
    contracts deployed and the device registered to its contributor. The validator's labeler answers with
    the device's claim: these tests are about the chain flow (tests/test_attacks.py runs the real one)."""
    from collector.bundle import bind_to_network
    from collector.config import Config
    from collector.labeling.network import network_digest
    from tests.fakes import ClaimedLabeler

    data = tmp_path / "data"
    config = Config(data_dir=str(data))
    chain = open_ledger("", data)
    chain.deploy(validator_key, validator_key.address, policy=network_digest(config))
    chain.register_device(validator_key, device=device_key, contributor=contributor_key)
    clips = [make_clip(noise_frames(5, seed), decision=ACCEPTED, quality={"score": 0.5 + seed / 10}) for seed in range(3)]
    for clip in clips:
        bind_to_network(clip, device_key.bind(chain.domain()))
    outbox = Outbox(data / "outbox.sqlite")
    enqueue_all(outbox, clips)
    store = EmbeddedStore(data / "ipfs" / "blocks.sqlite")
    assert all(not r.error for r in pin_due(outbox, store))
    validator = Validator(chain, store, validator_key, data / "validator.sqlite", config, labeler=ClaimedLabeler())
    return {"data": data, "clips": clips, "outbox": outbox, "store": store, "chain": chain, "validator": validator}


def test_submit_validate_settle_and_rewards(world, device_key, contributor_key):
    outbox, chain = world["outbox"], world["chain"]
    [submitted] = submit_due(outbox, chain, device_key)
    assert submitted.batch_id == 0 and not submitted.error and outbox.counts()["submitted"] == 3
    assert submit_due(outbox, chain, device_key) == []  # nothing is submitted twice
    [verdicts] = world["validator"].run_once().values()
    assert all(v.accepted for v in verdicts) and [v.quality_bps for v in verdicts] == [5000, 6000, 7000]
    assert world["validator"].run_once() == {}
    assert sync_settlements(outbox, chain) == 3 and outbox.counts()["settled"] == 3
    view = rewards_view(chain, contributor_key.address)
    assert view["accepted"] == 3 and view["pending"] == 0 and view["rejected"] == 0
    assert int(view["balance"]) == (5000 + 6000 + 7000) * 10**18 // 10000
    assert view["events"][0]["batch"] == 0


def test_a_crash_between_signing_and_sending_submits_the_batch_once(world, device_key):
    outbox, chain = world["outbox"], world["chain"]
    chain.fund(device_key.address)
    due = outbox.due("pinned")
    from storage.content.cid import Cid

    raw, tx_hash = chain.sign_submission(device_key, [Cid.parse(e.cid).digest for e in due])
    outbox.stage_tx(tx_hash, raw, "submit", [e.clip_id for e in due])
    # ... the process dies here; the next run finds the staged transaction and sends exactly it.
    results = submit_due(outbox, chain, device_key)
    assert [r.tx_hash for r in results] == [tx_hash] and results[0].batch_id == 0
    assert [b.batch_id for b in chain.pending_batches()] == [0]
    assert outbox.staged_txs("submit") == [] and outbox.counts()["submitted"] == 3


def test_the_validator_rejects_duplicates_and_a_forged_manifest(world, device_key, validator_key):
    from storage.content.cid import Cid
    from storage.ledger.base import SubmittedBatch

    outbox, chain = world["outbox"], world["chain"]
    entries = outbox.entries()
    # A clip signed by this device but submitted by another account is refused.
    cid = Cid.parse(entries[0].cid)
    verdict, _ = world["validator"].check(cid, SubmittedBatch(99, validator_key.address, (cid.digest,), device=validator_key.address))
    assert not verdict.accepted and verdict.reason is Reason.BAD_SIGNATURE
    submit_due(outbox, chain, device_key)
    world["validator"].run_once()
    # The same clips again, as a second batch: every one is a duplicate.
    chain.send_submission(*chain.sign_submission(device_key, [Cid.parse(e.cid).digest for e in entries]))
    [(batch_id, verdicts)] = world["validator"].run_once().items()
    assert batch_id == 1 and [v.reason for v in verdicts] == [Reason.DUPLICATE_CID] * 3


def test_a_revert_comes_back_as_one_line_with_the_contracts_reason(world, device_key):
    outbox, chain = world["outbox"], world["chain"]
    submit_due(outbox, chain, device_key)
    with pytest.raises(ChainError, match="does not hold the registry's validator role"):
        chain.settle(device_key, 0, [True] * 3, [10000] * 3, [])
    with pytest.raises(ChainError, match="batch 5 was never submitted"):
        chain.settle(world["validator"].key, 5, [False], [], [1])


def test_a_node_that_is_down_is_reported_as_unavailable_when_signing(world, device_key):
    """The node goes away after the ledger was opened: signing (which estimates gas on the node) must say
    ChainUnavailable, which the outbox keeps for later, not leak the HTTP client's ConnectionError."""
    import socket

    from web3 import Web3

    from storage.content.cid import Cid
    from storage.ledger.base import ChainUnavailable

    with socket.socket() as s:  # a port on loopback that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    chain = world["chain"]
    chain.w3 = Web3(Web3.HTTPProvider(f"http://127.0.0.1:{port}", request_kwargs={"timeout": 2}))
    with pytest.raises(ChainUnavailable, match="not reachable"):
        chain.sign_submission(device_key, [Cid.parse(world["outbox"].entries()[0].cid).digest])


def test_a_node_that_is_down_keeps_every_clip_pinned_for_the_next_round(world, device_key):
    import socket

    from web3 import Web3

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    outbox, chain = world["outbox"], world["chain"]
    chain.fund(device_key.address)
    chain.embedded = False  # a real node: nothing to fund
    chain.w3 = Web3(Web3.HTTPProvider(f"http://127.0.0.1:{port}", request_kwargs={"timeout": 2}))
    [result] = submit_due(outbox, chain, device_key)
    assert result.error and "not reachable" in result.error
    assert outbox.counts()["pinned"] == 3 and outbox.staged_txs("submit") == []


def test_the_embedded_chain_keeps_its_state_for_the_next_process(world, device_key, contributor_key, tmp_path):
    outbox, chain = world["outbox"], world["chain"]
    submit_due(outbox, chain, device_key)
    world["validator"].run_once()
    chain.close()
    env = dict(os.environ, KNACK_DATA_DIR=str(world["data"]), XDG_CONFIG_HOME=str(tmp_path / "no-config"))
    env.pop("KNACK_CONFIG", None)
    run = subprocess.run([sys.executable, "-m", "knack", "rewards", contributor_key.address, "--json"], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    view = json.loads(run.stdout)
    assert view["accepted"] == 3 and int(view["balance"]) > 0


def test_a_validator_key_from_the_environment(monkeypatch):
    from collector.identity import IdentityError, from_environment

    monkeypatch.setenv("KNACK_VALIDATOR_KEY", "0x" + "11" * 32)
    key = from_environment("KNACK_VALIDATOR_KEY")
    assert key.address == "0x19E7E376E7C213B7E7e7e46cc70A5dD086DAff2A"
    assert "11" * 32 not in repr(key)
    monkeypatch.setenv("KNACK_VALIDATOR_KEY", "not a key")
    with pytest.raises(IdentityError, match="is not a 32-byte hex private key") as error:
        from_environment("KNACK_VALIDATOR_KEY")
    assert "not a key" not in str(error.value)


def test_paid_clips_come_with_proofs_the_registry_accepts_and_a_dataset_holds_exactly_them(world, device_key, validator_key, contributor_key, tmp_path):
    from collector.config import Config
    from knack.dataset.build import Options, build
    from knack.dataset.verify import verify_dataset
    from storage.ledger.contracts import merkle
    from storage.validator.provenance import paid_clips

    outbox, chain = world["outbox"], world["chain"]
    submit_due(outbox, chain, device_key)
    [batch] = chain.pending_batches()
    # The validator pays the first and the last clip and rejects the middle one.
    chain.settle(validator_key, batch.batch_id, [True, False, True], [8000, 9000], [int(Reason.POLICY_REJECTED)])
    paid = paid_clips(chain)
    assert [(p.batch_id, p.index, p.quality_bps) for p in paid] == [(batch.batch_id, 0, 8000), (batch.batch_id, 2, 9000)]
    assert all(p.contributor.lower() == contributor_key.address.lower() and p.device.lower() == device_key.address.lower() for p in paid)
    root = chain.batch_root(batch.batch_id)
    assert root == merkle.root(batch.digests) and all(p.root == root.hex() and p.proof for p in paid)
    for p in paid:
        proof = [bytes.fromhex(x) for x in p.proof]
        assert chain.verify_inclusion(batch.batch_id, p.index, bytes.fromhex(p.digest), proof)
        assert not chain.verify_inclusion(batch.batch_id, 1, bytes.fromhex(p.digest), proof)  # another position
    # The forgery the hashes alone accept (an inner node passed off as a leaf): the registry's index bound refuses it.
    a, b = sorted((merkle.leaf(0, batch.digests[0]), merkle.leaf(1, batch.digests[1])))
    forged = merkle.proof(batch.digests, 0)[1:]
    assert merkle.verify(root, int.from_bytes(a, "big"), b, forged)
    assert not chain.verify_inclusion(batch.batch_id, int.from_bytes(a, "big") % 2**256, b, forged)

    config = Config(data_dir=str(world["data"]))
    out = tmp_path / "ds"
    result = build(config, Options(out=out, workers=1, progress=False), say=lambda _: None)
    assert [o.provenance["cid"] for o in result.included] == [p.cid for p in paid] and not result.left_out, [o.reason for o in result.left_out]
    assert [o.provenance["batch_index"] for o in result.included] == [0, 2]
    lines = list(verify_dataset(config, out))
    assert [line.ok for line in lines] == [True, True], [line.text for line in lines]
    # --task reads each manifest alone before the heavy work; the clips here name none.
    from knack.dataset.build import Filters

    result = build(config, Options(out=tmp_path / "ds2", filters=Filters(task="weld a seam"), progress=False), say=lambda _: None)
    assert result.episodes == 0 and [o.reason for o in result.left_out] == ["filtered out: its task is '', not 'weld a seam'"] * 2

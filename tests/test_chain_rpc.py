"""The same chain flow against a real JSON-RPC dev node (Foundry's anvil from the npm registry) on loopback."""

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from storage.content.ipfs import EmbeddedStore
from storage.ledger.rewards import rewards_view
from storage.ledger.web3_ledger import ARTIFACTS, open_ledger
from storage.outbox.db import Outbox
from storage.outbox.pinner import enqueue_all, pin_due
from storage.outbox.submitter import submit_due, sync_settlements
from storage.validator import Validator
from tests.test_outbox import ACCEPTED, noise_frames

ANVIL = Path(__file__).resolve().parent / "js" / "anvil" / "node_modules" / ".bin" / "anvil"
missing = None if ANVIL.exists() else "anvil is not installed in tests/js/anvil (make test installs it from the npm registry)"
if shutil.which("node") is None:
    missing = "Node.js is not installed: anvil's npm package needs it"


@pytest.fixture
def anvil():
    if missing:
        pytest.skip(missing)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(ANVIL), "--host", "127.0.0.1", "--port", str(port), "--silent"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail(f"anvil did not start: {proc.stderr.read().decode()[-500:]}")
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.mark.skipif(not (ARTIFACTS / "ClipRegistry.json").exists(), reason="the contract artifacts are not built yet")
def test_submit_validate_settle_on_a_real_json_rpc_node(anvil, tmp_path, make_clip, device_key):
    from collector.bundle import bind_to_network
    from collector.config import Config
    from collector.identity import load_or_create
    from collector.labeling.network import network_digest
    from tests.fakes import ClaimedLabeler

    validator, _ = load_or_create(tmp_path / "validator.json", "v", kdf="pbkdf2", iterations=1000)
    data = tmp_path / "data"
    config = Config(data_dir=str(data))
    chain = open_ledger(anvil, data)
    # A dev node's unlocked accounts pay the gas here; on a real network the operator funds these accounts.
    contributor, _ = load_or_create(tmp_path / "contributor.json", "c", kdf="pbkdf2", iterations=1000)
    for address in (device_key.address, validator.address):
        chain.w3.eth.send_transaction({"from": chain.w3.eth.accounts[0], "to": address, "value": 10**18})
    chain.deploy(validator, validator.address, policy=network_digest(config))
    chain.register_device(validator, device=device_key, contributor=contributor)
    clips = [make_clip(noise_frames(5, seed), decision=ACCEPTED, quality={"score": 0.9}) for seed in range(2)]
    for clip in clips:
        bind_to_network(clip, device_key.bind(chain.domain()))  # EIP-712 for anvil's chain id and this registry
    outbox = Outbox(data / "outbox.sqlite")
    enqueue_all(outbox, clips)
    store = EmbeddedStore(data / "blocks.sqlite")
    pin_due(outbox, store)
    [submitted] = submit_due(outbox, chain, device_key)
    assert not submitted.error
    verdicts = Validator(chain, store, validator, data / "validator.sqlite", config, labeler=ClaimedLabeler()).run_once()[submitted.batch_id]
    assert all(v.accepted for v in verdicts)
    assert sync_settlements(outbox, chain) == 2
    view = rewards_view(chain, contributor.address)
    assert view["accepted"] == 2 and int(view["balance"]) == 2 * 9000 * 10**18 // 10000

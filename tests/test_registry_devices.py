"""Devices belong to contributors: registration signed by both (relayed by anyone), revocation, rewards paid to
the contributor, strikes that block a device, the network's policy digest, and the EIP-712 domain the
registry shares with collector.identity; through Web3Ledger on the embedded chain, as the rest of Knack sees it."""

from __future__ import annotations

import hashlib
from contextlib import contextmanager

import pytest

pytest.importorskip("eth_tester", reason="needs web3[tester] (eth-tester + py-evm)")

from collector.identity import DeviceKey, SigningDomain  # noqa: E402
from storage.ledger.base import ChainError, StrikeRules  # noqa: E402
from storage.ledger.reasons import Reason, strike_mask  # noqa: E402
from storage.ledger.rewards import rewards_view  # noqa: E402
from storage.ledger.web3_ledger import ARTIFACTS, open_ledger  # noqa: E402

pytestmark = pytest.mark.skipif(not (ARTIFACTS / "ClipRegistry.json").exists(), reason="the contract artifacts are not built")

POLICY = hashlib.sha256(b"the network's models and policy").digest()
WINDOW = 7 * 24 * 3600
DUPLICATE = int(Reason.DUPLICATE_CID)  # a strike
POLICY_REJECTED = int(Reason.POLICY_REJECTED)  # not a strike


def key(seed: str) -> DeviceKey:
    from eth_keys import keys

    secret = hashlib.sha256(seed.encode()).digest()
    return DeviceKey(keys.PrivateKey(secret).public_key.to_checksum_address(), secret)


def digests(n: int, salt: str) -> list[bytes]:
    return [hashlib.sha256(f"{salt} clip {i}".encode()).digest() for i in range(n)]


class Net:
    def __init__(self, ledger):
        self.ledger = ledger
        self.admin, self.validator, self.relayer = key("admin"), key("validator"), key("relayer")
        ledger.deploy(self.admin, self.validator.address, policy=POLICY)
        ledger.fund(self.relayer.address)

    def pair(self, name: str) -> tuple[DeviceKey, DeviceKey]:
        """A new device registered to a new contributor."""
        device, contributor = key(f"{name} device"), key(f"{name} contributor")
        self.ledger.register_device(self.relayer, device=device, contributor=contributor)
        return device, contributor

    def submit(self, device: DeviceKey, ds: list[bytes]) -> int:
        self.ledger.fund(device.address)
        return self.ledger.send_submission(*self.ledger.sign_submission(device, ds))

    def settle(self, batch_id: int, verdicts: list[int | None]) -> None:
        """Settles a batch: a reason code per rejected clip, None per clip accepted at quality 1.0."""
        accepted = [v is None for v in verdicts]
        self.ledger.settle(self.validator, batch_id, accepted, [10000] * sum(accepted), [v for v in verdicts if v is not None])

    def strike(self, device: DeviceKey, n: int = 1, salt: str = "") -> None:
        """One batch of `n` clips, every one rejected as a duplicate (a strike each)."""
        self.settle(self.submit(device, digests(n, f"{device.address} strike {salt}")), [DUPLICATE] * n)

    def time_travel(self, seconds: int) -> None:
        tester = self.ledger.w3.provider.ethereum_tester
        tester.time_travel(self.ledger.w3.eth.get_block("latest")["timestamp"] + seconds)


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    ledger = open_ledger("", tmp_path_factory.mktemp("registry"))
    yield Net(ledger)
    ledger.close()


@contextmanager
def refused(error: str):
    """pytest.raises for a ChainError carrying the registry's custom error `error`."""
    with pytest.raises(ChainError) as info:
        yield info
    assert info.value.error == error, f"{info.value.error}: {info.value}"


# --- registration --------------------------------------------------------------------------------------


def test_a_device_is_registered_by_both_signatures_in_a_transaction_a_third_account_sends(net):
    device, contributor = key("first device"), key("first contributor")
    relayer_before = net.ledger.w3.eth.get_balance(net.relayer.address)
    net.ledger.register_device(net.relayer, device=device, contributor=contributor)
    record = net.ledger.device(device.address)
    assert (record.contributor, record.status, record.blocked, record.strikes) == (contributor.address, "active", False, 0)
    assert [r.device for r in net.ledger.devices_of(contributor.address)] == [device.address]
    assert net.ledger.w3.eth.get_balance(net.relayer.address) < relayer_before  # the relayer paid the gas
    assert net.ledger.w3.eth.get_balance(device.address) == net.ledger.w3.eth.get_balance(contributor.address) == 0


def test_a_contributor_who_signs_in_a_wallet_registers_through_the_typed_data(net):
    from eth_account import Account
    from eth_account.messages import encode_typed_data

    device, contributor = key("wallet device"), key("wallet contributor")
    deadline = net.ledger.registration_deadline()
    digest = net.ledger.registration_digest(device.address, contributor.address, deadline)
    typed = net.ledger.registration_typed_data(device.address, contributor.address, deadline)
    signed = Account.sign_message(encode_typed_data(full_message=typed), contributor._key)  # what a wallet returns
    net.ledger.submit_registration(net.relayer, device.address, contributor.address, deadline, bytes(signed.signature), device.sign_hash(digest))
    assert net.ledger.device(device.address).contributor == contributor.address


def test_a_device_key_is_not_registered_under_someone_elses_address_without_its_own_signature(net):
    victim, thief = key("victim device"), key("thief")
    deadline = net.ledger.registration_deadline()
    digest = net.ledger.registration_digest(victim.address, thief.address, deadline)
    with refused("BadDeviceSignature") as error:
        net.ledger.submit_registration(net.relayer, victim.address, thief.address, deadline, thief.sign_hash(digest), thief.sign_hash(digest))
    assert "only with its own signature" in str(error.value)
    assert net.ledger.device(victim.address) is None


def test_a_registration_is_not_registered_without_the_contributors_signature(net):
    device, contributor = key("unsigned device"), key("unsigned contributor")
    deadline = net.ledger.registration_deadline()
    digest = net.ledger.registration_digest(device.address, contributor.address, deadline)
    with refused("BadContributorSignature"):
        net.ledger.submit_registration(net.relayer, device.address, contributor.address, deadline, device.sign_hash(digest), device.sign_hash(digest))


def test_signatures_whose_nonce_was_used_are_refused(net):
    contributor = key("nonce contributor")
    old_device, other = key("nonce device 1"), key("nonce device 2")
    deadline = net.ledger.registration_deadline()
    digest = net.ledger.registration_digest(old_device.address, contributor.address, deadline)
    signatures = (contributor.sign_hash(digest), old_device.sign_hash(digest))
    net.ledger.register_device(net.relayer, device=other, contributor=contributor)  # uses the nonce signed above
    with refused("BadContributorSignature"):
        net.ledger.submit_registration(net.relayer, old_device.address, contributor.address, deadline, *signatures)


def test_a_registration_past_its_deadline_is_refused(net):
    device, contributor = key("late device"), key("late contributor")
    past = net.ledger.w3.eth.get_block("latest")["timestamp"] - 1
    with refused("RegistrationExpired") as error:
        net.ledger.register_device(net.relayer, device=device, contributor=contributor, deadline=past)
    assert "has passed" in str(error.value)


def test_a_registered_device_cannot_be_registered_again(net):
    device, contributor = net.pair("twice")
    with refused("DeviceAlreadyRegistered"):
        net.ledger.register_device(net.relayer, device=device, contributor=key("other contributor"))
    with refused("DeviceAlreadyRegistered"):
        net.ledger.register_device(net.relayer, device=device, contributor=contributor)


def test_the_zero_address_is_neither_a_device_nor_a_contributor(net):
    contributor = key("zero contributor")
    deadline = net.ledger.registration_deadline()
    digest = net.ledger.registration_digest("0x" + "00" * 20, contributor.address, deadline)
    with refused("ZeroAddress"):
        net.ledger.submit_registration(net.relayer, "0x" + "00" * 20, contributor.address, deadline, contributor.sign_hash(digest), bytes(65))


# --- submitting ------------------------------------------------------------------------------------------


def test_an_unregistered_device_cannot_submit(net):
    stranger = key("unregistered device")
    with refused("UnregisteredDevice") as error:
        net.submit(stranger, digests(2, "unregistered"))
    assert str(error.value) == f"device {stranger.address} is not registered to a contributor: register it with `knack device register`"


def test_a_batch_records_its_device_and_contributor(net):
    device, contributor = net.pair("records")
    batch_id = net.submit(device, digests(3, "records"))
    [batch] = [b for b in net.ledger.pending_batches() if b.batch_id == batch_id]
    assert (batch.device, batch.contributor, batch.digests) == (device.address, contributor.address, tuple(digests(3, "records")))
    assert [b.batch_id for b in net.ledger.submissions_of(contributor.address)] == [batch_id]


def test_rewards_are_minted_to_the_contributor_not_the_device(net):
    device, contributor = net.pair("paid")
    batch_id = net.submit(device, digests(3, "paid"))
    net.settle(batch_id, [None, POLICY_REJECTED, None])
    settlement = net.ledger.settlement(batch_id)
    assert (settlement.contributor, settlement.device, settlement.accepted) == (contributor.address, device.address, (True, False, True))
    assert net.ledger.balance_of(contributor.address) == settlement.reward == 2 * 10**18
    assert net.ledger.balance_of(device.address) == 0


# --- revocation -------------------------------------------------------------------------------------------


def test_only_its_contributor_revokes_a_device(net):
    device, contributor = net.pair("revoke")
    for who in (device, net.admin, key("revoke stranger")):
        with refused("NotContributor"):
            net.ledger.revoke_device(who, device.address)
    net.ledger.revoke_device(contributor, device.address)
    assert net.ledger.device(device.address).status == "revoked"


def test_a_revoked_device_cannot_submit(net):
    device, contributor = net.pair("revoked submit")
    net.ledger.revoke_device(contributor, device.address)
    with refused("RevokedDevice") as error:
        net.submit(device, digests(1, "revoked"))
    assert "revoked" in str(error.value)


def test_a_revoked_device_key_cannot_be_registered_again(net):
    device, contributor = net.pair("revoked again")
    net.ledger.revoke_device(contributor, device.address)
    with refused("RevokedDevice"):
        net.ledger.register_device(net.relayer, device=device, contributor=contributor)


def test_a_batch_submitted_before_revocation_still_pays_the_contributor(net):
    device, contributor = net.pair("revoked pays")
    batch_id = net.submit(device, digests(1, "revoked pays"))
    net.ledger.revoke_device(contributor, device.address)
    net.settle(batch_id, [None])
    assert net.ledger.balance_of(contributor.address) == 10**18


# --- strikes ----------------------------------------------------------------------------------------------


def test_the_registry_is_deployed_with_the_strike_mask_of_reasons_py(net):
    assert net.ledger.strike_rules() == StrikeRules(3, WINDOW, strike_mask())


def test_strikes_below_the_limit_leave_the_device_submitting(net):
    device, _ = net.pair("two strikes")
    net.strike(device, 2)
    record = net.ledger.device(device.address)
    assert (record.strikes, record.blocked) == (2, False)
    net.submit(device, digests(1, "still submits"))


def test_strikes_reaching_the_limit_block_the_device(net):
    device, _ = net.pair("blocked")
    net.strike(device, 1, "a")
    net.strike(device, 2, "b")
    record = net.ledger.device(device.address)
    assert (record.strikes, record.blocked) == (3, True)
    with refused("BlockedDevice") as error:
        net.submit(device, digests(1, "blocked"))
    assert "blocked after too many strikes" in str(error.value)


def test_rejections_outside_the_strike_mask_are_not_strikes(net):
    device, _ = net.pair("no strike")
    net.settle(net.submit(device, digests(4, "no strike")), [POLICY_REJECTED, int(Reason.UNREADABLE), None, int(Reason.NO_VIDEO)])
    assert net.ledger.device(device.address).strikes == 0


def test_its_contributor_clears_the_strikes_of_a_blocked_device(net):
    device, contributor = net.pair("cleared")
    net.strike(device, 3)
    net.ledger.clear_strikes(contributor, device.address)
    record = net.ledger.device(device.address)
    assert (record.strikes, record.blocked) == (0, False)
    net.submit(device, digests(1, "after clearing"))


def test_the_admin_may_clear_strikes_and_nobody_else_but_the_contributor(net):
    device, _ = net.pair("admin clears")
    net.strike(device, 3)
    for who in (device, key("clear stranger")):
        with refused("NotContributor"):
            net.ledger.clear_strikes(who, device.address)
    net.ledger.clear_strikes(net.admin, device.address)
    assert not net.ledger.device(device.address).blocked


def test_strikes_start_over_when_their_window_has_passed(net):
    device, _ = net.pair("window")
    net.strike(device, 2, "before")
    started = net.ledger.device(device.address).window_start
    net.time_travel(WINDOW + 1)
    net.strike(device, 1, "after")
    record = net.ledger.device(device.address)
    assert (record.strikes, record.blocked) == (1, False)
    assert record.window_start > started + WINDOW


# --- the network's rules ----------------------------------------------------------------------------------


def test_the_policy_digest_is_set_at_deployment(net):
    assert net.ledger.policy_digest() == POLICY


def test_only_the_admin_sets_the_policy_digest(net):
    other = hashlib.sha256(b"other rules").digest()
    for who in (net.validator, key("policy stranger")):
        with refused("AccessControlUnauthorizedAccount") as error:
            net.ledger.set_policy(who, other)
        assert "does not hold the registry's admin role" in str(error.value)
    net.ledger.set_policy(net.admin, other)
    assert net.ledger.policy_digest() == other
    net.ledger.set_policy(net.admin, POLICY)


def test_only_the_admin_sets_the_strike_rules(net):
    rules = StrikeRules(5, 3600, strike_mask({Reason.DUPLICATE_CID}))
    with refused("AccessControlUnauthorizedAccount"):
        net.ledger.set_strike_rules(net.validator, rules)
    net.ledger.set_strike_rules(net.admin, rules)
    assert net.ledger.strike_rules() == rules
    net.ledger.set_strike_rules(net.admin, StrikeRules())


def test_the_registry_signs_in_the_domain_collector_identity_computes(net):
    registry = net.ledger.registry
    domain = net.ledger.domain()
    assert domain == SigningDomain(net.ledger.w3.eth.chain_id, net.ledger.deployment.registry)
    assert bytes(registry.functions.domainSeparator().call()) == domain.separator()
    _, name, version, chain_id, contract, _, _ = registry.functions.eip712Domain().call()
    assert (name, version, chain_id, contract) == ("Knack", "1", domain.chain_id, domain.registry)


# --- what the validator and the rewards view read -----------------------------------------------------------


def test_paid_clips_are_every_accepted_clip_with_its_batch_and_device(net):
    start = net.ledger.head() + 1
    (a, _), (b, _) = net.pair("paid clips a"), net.pair("paid clips b")
    ds_a, ds_b = digests(3, "paid a"), digests(2, "paid b")
    batch_a, batch_b = net.submit(a, ds_a), net.submit(b, ds_b)
    net.settle(batch_a, [None, DUPLICATE, None])
    net.settle(batch_b, [POLICY_REJECTED, None])
    assert net.ledger.paid_clips(start) == [(ds_a[0], batch_a, a.address), (ds_a[2], batch_a, a.address), (ds_b[1], batch_b, b.address)]
    assert net.ledger.paid_clips(net.ledger.head() + 1) == []


def test_the_rewards_view_breaks_a_contributors_rewards_down_by_device(net):
    contributor = key("many devices contributor")
    one, two = key("many devices 1"), key("many devices 2")
    for device in (one, two):
        net.ledger.register_device(net.relayer, device=device, contributor=contributor)
    net.settle(net.submit(one, digests(2, "view one")), [None, DUPLICATE])
    net.submit(two, digests(3, "view two"))
    view = rewards_view(net.ledger, contributor.address)
    assert (view["accepted"], view["rejected"], view["pending"]) == (1, 1, 3)
    rows = {row["device"]: row for row in view["devices"]}
    assert rows[one.address] | {"device": ""} == {
        "device": "",
        "status": "active",
        "blocked": False,
        "strikes": 1,
        "accepted": 1,
        "rejected": 1,
        "pending": 0,
        "reward": str(10**18),
        "reward_tokens": "1.0000",
    }
    assert (rows[two.address]["pending"], rows[two.address]["reward"]) == (3, "0")

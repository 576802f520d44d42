"""`knack device …` and `knack chain policy`: a device joining its contributor on chain, the contributor's
hold on it (revoke, clear strikes), and the network's model and policy digest that validators must run."""

from __future__ import annotations

import contextlib
import json

from collector.config import ConfigError, load
from knack import wiring


def _device_address(config, address: str | None) -> str:
    """The given address, else this device's own (read from its keystore in clear: no password needed)."""
    import dataclasses

    if address:
        return address
    try:
        return wiring.contributor_address(dataclasses.replace(config, identity=dataclasses.replace(config.identity, contributor="")))
    except ConfigError:
        raise ConfigError(
            f"this device has no key yet at {config.keystore_path} (`knack device register` creates it): give a device address, e.g. `knack device show 0x…`"
        ) from None


@contextlib.contextmanager
def _deployed(config):
    """The configured ledger, closed afterwards whatever happens; a clear error when nothing is deployed."""
    ledger = wiring.open_ledger(config)
    try:
        if ledger.deployment is None:
            raise ConfigError(f"nothing is deployed on {wiring.ledger_name(config)} yet: run `knack chain deploy` (or `knack demo`) first")
        yield ledger
    finally:
        ledger.close()


def _contributor(config, args):
    return wiring.contributor_key(config, path=args.contributor_keystore)


def cmd_device_register(args) -> int:
    """The device signs (it consents to be this contributor's), the contributor signs (it authorises the
    device), and the device relays the registration, paying its gas."""
    config = load(args.config)
    device = wiring.device_key(config)
    contributor = _contributor(config, args)
    with _deployed(config) as ledger:
        registered = wiring.register_device(ledger, device, device, contributor)
    if registered:
        print(
            f"Device {device.address} is registered to contributor {contributor.address} on {wiring.ledger_name(config)}: its accepted clips pay that address"
        )
    else:
        print(f"Device {device.address} was already registered to contributor {contributor.address}")
    return 0


def _as_contributor(args, act, done: str) -> int:
    """Something only the device's contributor may do to it on chain, signed with the contributor's key."""
    config = load(args.config)
    device = _device_address(config, args.device)
    contributor = _contributor(config, args)
    with _deployed(config) as ledger:
        act(ledger, contributor, device)
    print(done.format(device=device))
    return 0


def cmd_device_revoke(args) -> int:
    return _as_contributor(
        args,
        lambda ledger, contributor, device: ledger.revoke_device(contributor, device),
        "Device {device} is revoked: the registry refuses its batches from now on (a revoked key cannot be registered again)",
    )


def cmd_device_clear(args) -> int:
    return _as_contributor(
        args,
        lambda ledger, contributor, device: ledger.clear_strikes(contributor, device),
        "Device {device}: strikes cleared, its batches are accepted again",
    )


def cmd_device_show(args) -> int:
    config = load(args.config)
    address = _device_address(config, args.device)
    with _deployed(config) as ledger:
        record, rules = ledger.device(address), ledger.strike_rules()
    if args.json:
        print(json.dumps({"device": address, "record": None if record is None else record.__dict__, "strike_rules": rules.__dict__}, indent=2, default=str))
        return 0
    if record is None:
        print(f"Device {address} is not registered: `knack device register` (with the contributor's key) makes it one of theirs")
        return 1
    state = "BLOCKED (the contributor clears it: `knack device clear-strikes`)" if record.blocked else record.status
    print(f"Device {record.device}: {state}, paying contributor {record.contributor}")
    if rules.max_strikes:
        print(f"  strikes {record.strikes}: {rules.max_strikes} within {rules.window_s / 86400:g} day(s) block it")
    else:
        print(f"  strikes {record.strikes} (this network counts strikes but never blocks a device)")
    return 0


def cmd_chain_policy(args) -> int:
    """Shows this configuration's model and policy digest beside the registry's; --set makes it the network's
    (admin only)."""
    from collector.labeling.network import network_digest, rules

    config = load(args.config)
    mine = network_digest(config)
    with _deployed(config) as ledger:
        if args.set:
            ledger.set_policy(wiring.validator_key(config), mine)
        onchain = bytes(ledger.policy_digest())
    if args.json:
        print(json.dumps({"registry": "0x" + onchain.hex(), "local": "0x" + mine.hex(), "rules": rules(config)}, indent=2))
        return 0
    print(f"registry:    0x{onchain.hex()}")
    print(
        f"this config: 0x{mine.hex()}  ({'the same: a validator with this config settles' if onchain == mine else 'DIFFERENT: a validator with this config refuses to settle'})"
    )
    return 0 if onchain == mine else 1

"""The one place where a device's parts are opened from its configuration: keys, the content store, the
outbox, the ledger and the validator. Every command, the app, the robot and the demo open them here."""

from __future__ import annotations

import getpass
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from collector.config import Config, ConfigError
from collector.identity import IdentityError

DEVICE_PASSWORD_ENV = "KNACK_DEVICE_PASSWORD"
VALIDATOR_PASSWORD_ENV = "KNACK_VALIDATOR_PASSWORD"
VALIDATOR_KEY_ENV = "KNACK_VALIDATOR_KEY"
VALIDATOR_KEYSTORE = "validator-key.json"
CONTRIBUTOR_KEY_ENV = "KNACK_CONTRIBUTOR_KEY"
CONTRIBUTOR_PASSWORD_ENV = "KNACK_CONTRIBUTOR_PASSWORD"
CONTRIBUTOR_KEYSTORE = "contributor-key.json"  # a demo's, or a contributor's own machine's

Announce = Callable[[str], None]


def ask_password(prompt: str, confirm: bool) -> str:
    """Asked at the terminal (nothing without one); never stored or logged."""
    if not sys.stdin.isatty():
        return ""
    password = getpass.getpass(prompt)
    if confirm and getpass.getpass("Repeat it: ") != password:
        raise IdentityError("the two passwords differ")
    return password


def device_password(confirm: bool, prompt: str = "Password for the device key: ") -> str:
    """From KNACK_DEVICE_PASSWORD, else asked at the terminal."""
    return os.environ.get(DEVICE_PASSWORD_ENV, "") or ask_password(prompt, confirm)


def device_key(config: Config, announce: Announce = print, password: str | None = None):
    """The device's signing key from its encrypted keystore, created on first use; bound to the network
    (its manifests signed as EIP-712 for that chain and registry) once this data directory knows one."""
    from collector.identity import load_or_create

    path = config.keystore_path
    if password is None:
        password = device_password(confirm=not path.exists())
    key, created = load_or_create(path, password)
    if created:
        announce(f"Created device key {key.address} in {path} (encrypted; keep its password safe)")
    return key.bind(network_domain(config))


def contributor_key(config: Config, announce: Announce = print, password: str | None = None, path: Path | None = None):
    """The contributor's account, which authorises devices and is paid: KNACK_CONTRIBUTOR_KEY (hex) if set,
    else an encrypted keystore (`path`, default the data directory's), unlocked by KNACK_CONTRIBUTOR_PASSWORD
    or `password`, created on first use only in the data directory (a demo)."""
    from collector.identity import from_environment, load_or_create

    if (key := from_environment(CONTRIBUTOR_KEY_ENV)) is not None:
        return key
    given = path is not None
    path = Path(path) if given else config.data_path / CONTRIBUTOR_KEYSTORE
    if given and not path.is_file():
        raise IdentityError(f"no contributor keystore at {path}")
    password = os.environ.get(CONTRIBUTOR_PASSWORD_ENV) or password
    if not password:
        password = ask_password("Password for the contributor key: ", confirm=not path.exists())
    key, created = load_or_create(path, password)
    if created:
        announce(f"Created contributor key {key.address} in {path} (encrypted)")
    return key


def network_domain(config: Config):
    """The network this data directory last deployed to or read (chain id and registry, from the saved
    deployment), without connecting; None before it knows one."""
    from collector.identity import SigningDomain
    from storage.ledger.base import Deployment

    chain_dir = config.data_path / "chain"
    if config.storage.chain_rpc:
        saved = sorted(p for p in chain_dir.glob("deployment-*.json") if p.name != "deployment-embedded.json") if chain_dir.is_dir() else []
        if len(saved) != 1:
            return None  # several chains used from one data directory: the session asks the node
        deployment = Deployment.load(saved[0])
    else:
        deployment = Deployment.load(chain_dir / "deployment-embedded.json")
    return SigningDomain(deployment.chain_id, deployment.registry) if deployment else None


def validator_key(config: Config, announce: Announce = print, password: str | None = None):
    """The validator's account: KNACK_VALIDATOR_KEY (hex) if set, else its own encrypted keystore in the data
    directory, unlocked by KNACK_VALIDATOR_PASSWORD, else `password` (a demo's one password), else the device
    password (a bench device that validates its own clips)."""
    from collector.identity import from_environment, load_or_create

    if (key := from_environment(VALIDATOR_KEY_ENV)) is not None:
        return key
    path = config.data_path / VALIDATOR_KEYSTORE
    password = os.environ.get(VALIDATOR_PASSWORD_ENV) or password
    if not password:
        password = device_password(confirm=False, prompt="Password for the validator key (the device password, on a bench device): ")
    key, created = load_or_create(path, password)
    if created:
        announce(f"Created validator key {key.address} in {path} (encrypted)")
    return key


def device_address(config: Config) -> str | None:
    """This device's key address, read from its keystore in clear (no password needed); None without a
    readable keystore."""
    try:
        return "0x" + json.loads(config.keystore_path.read_text())["address"].removeprefix("0x")
    except (OSError, ValueError, KeyError, AttributeError):
        return None


def contributor_address(config: Config, address: str | None = None) -> str:
    """Whose rewards to show: the given address, the configured contributor, else this device's key address
    (read from the keystore in clear: no password is needed to look at rewards)."""
    if address:
        return address
    if config.identity.contributor:
        return config.identity.contributor
    found = device_address(config)
    if found is None:
        raise ConfigError(f"no address given and no device key at {config.keystore_path}: pass one, e.g. `knack rewards 0x…`")
    return found


# --- content store and outbox ----------------------------------------------------------------------------
def open_store(config: Config):
    """The configured IPFS daemon, else the embedded block store in the data directory."""
    from storage.content.ipfs import open_store as open_content_store

    return open_content_store(config.storage.ipfs_api, config.data_path)


def reading_store(config: Config):
    """Where clips are read from by CID (a dataset build, a review): the configured IPFS daemon, else the
    configured HTTP gateway, else the embedded block store in the data directory."""
    if config.storage.ipfs_gateway and not config.storage.ipfs_api:
        from storage.content.gateway import GatewayStore

        return GatewayStore(config.storage.ipfs_gateway)
    return open_store(config)


def embedded_store(config: Config):
    from storage.content.ipfs import EmbeddedStore

    return EmbeddedStore(config.data_path / "ipfs" / "blocks.sqlite")


def open_outbox(config: Config):
    """The outbox of this data directory, with every labeled clip on disk known to it."""
    from collector.bundle import list_clips
    from storage.outbox.db import Outbox
    from storage.outbox.pinner import enqueue_all

    outbox = Outbox(config.data_path / "outbox.sqlite")
    enqueue_all(outbox, list_clips(config.clips_path))
    return outbox


def rebuild_outbox(config: Config, say: Announce = print):
    """A new outbox for this data directory from the clips on disk, the content store and this device's
    batches on chain (each read if it can be; `say` tells what could not), settlements included. The damaged
    file is kept beside it (storage.outbox.rebuild)."""
    from collector.bundle import list_clips
    from storage.content.ipfs import StoreUnavailable
    from storage.ledger.base import ChainError
    from storage.outbox.rebuild import rebuild
    from storage.outbox.submitter import sync_settlements

    try:
        store = open_store(config)
    except (StoreUnavailable, OSError) as exc:
        say(f"the content store cannot be read ({exc})")
        store = None
    ledger = batches = None
    try:
        ledger = open_ledger(config)
        if ledger.deployment is not None:
            batches = _device_batches(config, ledger)
    except (ChainError, OSError, ValueError, KeyError) as exc:
        say(f"the chain cannot be read ({exc})")
    result = rebuild(config.data_path / "outbox.sqlite", list_clips(config.clips_path), store, batches)
    if ledger is not None and batches is not None:
        try:
            sync_settlements(result.outbox, ledger)
        except ChainError as exc:
            say(f"settlements cannot be read from the chain now ({exc}); the next chain round reads them")
    return result


def _device_batches(config: Config, ledger) -> list:
    """This device's batches on chain ([] for a device the registry does not know, or no key yet)."""
    address = device_address(config)
    record = ledger.device(address) if address else None
    if record is None:
        return []
    return [b for b in ledger.submissions_of(record.contributor) if b.device.lower() == address.lower()]


def remote_pinning(config: Config):
    """The configured pinning service, with its token from the environment; None when none is set."""
    from storage.content.remote_pin import TOKEN_ENV, PinningService, RemotePinError

    if not config.storage.pinning_service:
        return None
    try:
        return PinningService(config.storage.pinning_service, os.environ.get(TOKEN_ENV, ""))
    except RemotePinError as exc:
        raise ConfigError(str(exc)) from None


# --- the ledger and the validator ----------------------------------------------------------------------
def open_ledger(config: Config, deployer=None):
    """The configured chain (`storage.chain_rpc`), else the embedded one in the data directory; deployed
    as `ensure_deployed` says."""
    from storage.ledger.web3_ledger import open_ledger as open_web3_ledger

    return ensure_deployed(open_web3_ledger(config.storage.chain_rpc, config.data_path), deployer, config)


def ensure_deployed(ledger, deployer=None, config: Config | None = None):
    """With a `deployer` (the admin key, or a function that gives it, asked only when it is needed), the
    embedded chain deploys its contracts on first use, naming this configuration's models and policy as the
    network's (`network_digest`); a real chain needs `knack chain deploy`."""
    if deployer is not None and ledger.deployment is None and ledger.embedded:
        from collector.labeling.network import network_digest
        from storage.ledger.base import StrikeRules

        admin = deployer() if callable(deployer) else deployer
        # A bench's own network: strikes are counted but never block (a looping sample is all near duplicates,
        # and a bench has no one to clear them); `knack chain deploy` gives a real network the default rules.
        ledger.deploy(admin, admin.address, policy=network_digest(config or Config()), strikes=StrikeRules(max_strikes=0))
    return ledger


def register_device(ledger, relayer, device, contributor) -> bool:
    """Registers `device` (a key) to `contributor` (a key) on chain, relayed by `relayer`; False when it
    already is registered to that contributor. Raises ChainError when the registry refuses (another
    contributor's device, a revoked key)."""
    record = ledger.device(device.address)
    if record is not None and record.status == "active" and record.contributor.lower() == contributor.address.lower():
        return False
    ledger.register_device(relayer, device=device, contributor=contributor)
    return True


def open_validator(config: Config, ledger, store, key):
    """The validator over this ledger and content store, with this configuration's labeler and policy (the
    registry must name their digest); its cache of paid content lives in the data directory."""
    from storage.validator import Validator

    return Validator(ledger, store, key, config.data_path / "validator.sqlite", config)


def ledger_name(config: Config) -> str:
    return config.storage.chain_rpc or "the embedded chain"


def data_dir_line(path: Path) -> str:
    return f"export KNACK_DATA_DIR={path}"

"""`knack doctor`: which real parts this configuration can reach, each as one line."""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from dataclasses import dataclass

from collector.config import Config


@dataclass(frozen=True)
class Check:
    part: str
    status: str  # ok | info | warn | fail
    detail: str


def _data_dir(config: Config) -> Check:
    path = config.data_path
    probe = path if path.exists() else next((p for p in path.parents if p.exists()), path)
    if not os.access(probe, os.W_OK):
        return Check("data directory", "fail", f"{path} is not writable by this user")
    free = shutil.disk_usage(probe).free
    return Check(
        "data directory",
        "ok" if free > 1 << 30 else "warn",
        f"{path} ({'exists' if path.exists() else 'created on first recording'}; {free / 2**30:.1f} GiB free)",
    )


def _device_key(config: Config) -> Check:
    path = config.keystore_path
    if not path.exists():
        return Check("device key", "info", f"none yet at {path}: created (encrypted) on the first recording")
    try:
        address = json.loads(path.read_text()).get("address", "?")
    except (OSError, ValueError) as exc:
        return Check("device key", "fail", f"{path} is not a readable keystore: {exc}")
    return Check("device key", "ok", f"0x{address.removeprefix('0x')} in {path}")


def _cameras(config: Config) -> list[Check]:
    from collector.sources.camera import OpenCVGrabber

    checks = []
    for cam in config.camera:
        grabber = OpenCVGrabber(cam)
        why = grabber.open()
        if why is None:
            frame = grabber.read()
            props = grabber.properties()
            grabber.close()
            if frame is None:
                checks.append(Check(f"camera {cam.name}", "fail", f"{cam.source} opens but gives no frame"))
            else:
                checks.append(
                    Check(
                        f"camera {cam.name}",
                        "ok",
                        f"{cam.source}: {props.get('width')}x{props.get('height')} @ {props.get('fps'):g} fps {props.get('fourcc', '')}",
                    )
                )
        else:
            checks.append(Check(f"camera {cam.name}", "fail", why))
    return checks


def _serial(config: Config) -> list[Check]:
    from collector.sources.serial_port import PySerialStream

    checks = []
    for ser in config.serial:
        stream = PySerialStream(ser)
        why = stream.open()
        stream.close()
        detail = f"{ser.port} at {ser.baudrate} baud, {ser.protocol.value}"
        checks.append(Check(f"serial {ser.name}", "ok" if why is None else "fail", detail if why is None else f"{ser.port}: {why}"))
    return checks


def _onnxruntime() -> Check:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        return Check("onnxruntime", "fail", f"not importable: {exc}")
    return Check("onnxruntime", "ok", f"{ort.__version__}; providers in this build: {', '.join(ort.get_available_providers())}")


def _labeler(config: Config) -> list[Check]:
    """Loads every model as the labeler would: the provider shown is the one that really runs."""
    from collector.labeling.cards import CardError
    from collector.labeling.models import Models

    try:
        models = Models(config.labeler)
    except (CardError, OSError, KeyError) as exc:
        return [Check("labeler", "fail", str(exc))]
    checks = [
        Check(f"model {m['task']}", "ok", f"{m['name']} {m['version']} on {m['provider']} (sha256 {m['sha256'][:12]}…, {m['licence']})")
        for m in models.describe()
    ]
    notes = models.notes
    status = "warn" if notes and config.labeler.device.value != "auto" else "info" if notes else "ok"
    checks.append(Check("execution provider", status, f"{models.provider}" + (f": {'; '.join(notes)}" if notes else "")))
    return checks


def _post_json(url: str, body: bytes | None, timeout: float = 2.0) -> dict:
    request = urllib.request.Request(url, data=body if body is not None else b"", method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read() or b"{}")


def _ipfs(config: Config) -> Check:
    if not config.storage.ipfs_api:
        path = config.data_path / "ipfs" / "blocks.sqlite"
        if not path.exists():
            return Check("ipfs store", "ok", f"embedded block store (no daemon configured); will be created at {path}")
        from storage.content.blockstore import BlockStore

        blocks = BlockStore(path)
        detail = f"embedded block store {path}: {blocks.count()} blocks, {len(blocks.pins())} pinned clips"
        blocks.close()
        return Check("ipfs store", "ok", detail)
    parts = config.storage.ipfs_api.strip("/").split("/")
    try:
        host, port = parts[1], parts[3]
        info = _post_json(f"http://{host}:{port}/api/v0/version", None)
    except (OSError, ValueError, IndexError) as exc:
        return Check("ipfs daemon", "fail", f"{config.storage.ipfs_api} is not reachable: {exc}")
    return Check("ipfs daemon", "ok", f"{config.storage.ipfs_api}: version {info.get('Version', '?')}")


def _chain(config: Config) -> Check:
    if not config.storage.chain_rpc:
        from storage.ledger.base import Deployment

        deployment = Deployment.load(config.data_path / "chain" / "deployment-embedded.json")
        where = f"registry {deployment.registry}" if deployment else "contracts deployed on first use"
        return Check("chain", "ok", f"embedded EVM (no chain_rpc configured), state in {config.data_path / 'chain'}; {where}")
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}).encode()
    try:
        reply = _post_json(config.storage.chain_rpc, body)
        chain_id = int(reply["result"], 16)
    except (OSError, ValueError, KeyError) as exc:
        return Check("chain rpc", "fail", f"{config.storage.chain_rpc} is not reachable: {exc}")
    return Check("chain rpc", "ok", f"{config.storage.chain_rpc}: chain id {chain_id}")


def _network_rules(config: Config) -> Check:
    """The digest a validator with this configuration must find on chain (`knack chain policy` compares)."""
    from collector.labeling.cards import CardError
    from collector.labeling.network import network_digest

    try:
        digest = network_digest(config)
    except (CardError, OSError) as exc:
        return Check("network rules", "fail", f"the model and policy digest cannot be computed: {exc}")
    return Check("network rules", "info", f"model and policy digest 0x{digest.hex()} (validators settle only when the registry names it)")


def run_checks(config: Config) -> list[Check]:
    checks = [_data_dir(config), _device_key(config)]
    checks += _cameras(config) or [Check("cameras", "info", "none configured ([[camera]] in knack.toml; see `knack devices`)")]
    checks += _serial(config) or [Check("serial ports", "info", "none configured ([[serial]] in knack.toml; see `knack devices`)")]
    checks += [_onnxruntime(), *_labeler(config), _network_rules(config), _ipfs(config), _chain(config)]
    return checks

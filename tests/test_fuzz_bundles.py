"""Thousands of generated manifests and bundles thrown at the manifest parser, `knack verify`'s check and the
validator: nothing crashes, every bad one is refused with a reason (hypothesis)."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.bundle import MANIFEST, BundleFormatError, canonical, parse_manifest, verify_bundle
from collector.config import Config
from collector.identity import DeviceKey, SigningDomain
from storage.content.ipfs import EmbeddedStore
from storage.ledger.base import SubmittedBatch
from storage.ledger.reasons import Reason
from storage.ledger.web3_ledger import ARTIFACTS, open_ledger
from storage.validator import Validator

scalars = (
    st.none() | st.booleans() | st.integers(min_value=-(10**30), max_value=10**30) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)
NAMES = ["video.mp4", "video-cam.mp4", "frames.parquet", "sensors.parquet", "clip.mp4", "../escape", "a/b", ".hidden", "manifest.json", ""]
FIELDS = ["schema", "clip_id", "device_id", "duration_s", "streams", "files", "signature", "decision", "quality", "labels"]


def key(seed: str) -> DeviceKey:
    from eth_account import Account

    account = Account.from_key(hashlib.sha256(seed.encode()).digest())
    return DeviceKey(account.address, bytes(account.key))


DEVICE = key("fuzz device")


def valid_manifest(files: list[dict]) -> dict:
    return {
        "schema": 1,
        "clip_id": "0190c1d2-0000-7000-8000-000000000000",
        "device_id": DEVICE.address,
        "duration_s": 2.5,
        "streams": [{"name": "cam", "kind": "camera"}],
        "files": files,
        "decision": {"accepted": True, "summary": "accepted"},
        "quality": {"score": 0.9},
    }


@st.composite
def manifests(draw) -> bytes:
    """Valid manifests with fields replaced by anything, arbitrary JSON, and arbitrary bytes."""
    kind = draw(st.sampled_from(["mutated", "json", "bytes", "deep"]))
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "deep":
        depth = draw(st.integers(min_value=30, max_value=5000))
        return ("[" * depth + "]" * depth).encode()
    manifest = valid_manifest([{"name": draw(st.sampled_from(NAMES)), "size": draw(st.integers(-5, 50)), "sha256": "ab" * 32}])
    for field in draw(st.lists(st.sampled_from(FIELDS), max_size=3)):
        if draw(st.booleans()):
            manifest[field] = draw(json_values)
        else:
            manifest.pop(field, None)
    manifest["signature"] = DEVICE.sign(canonical(manifest)) if draw(st.booleans()) else draw(json_values)
    return json.dumps(manifest).encode()


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(manifests())
def test_parse_manifest_refuses_anything_malformed_with_one_sentence(data):
    try:
        manifest = parse_manifest(data)
    except BundleFormatError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert isinstance(manifest, dict) and isinstance(manifest["files"], list)


@st.composite
def bundles(draw) -> tuple[bytes, dict[str, bytes]]:
    files = {name: draw(st.binary(max_size=64)) for name in draw(st.lists(st.sampled_from(NAMES[:4] + ["clip.mp4"]), max_size=3, unique=True))}
    if draw(st.booleans()):  # a manifest that lists exactly these files, correctly hashed and signed
        entries = [{"name": n, "size": len(b), "sha256": hashlib.sha256(b).hexdigest()} for n, b in sorted(files.items())]
        manifest = valid_manifest(entries)
        manifest["signature"] = DEVICE.sign(canonical(manifest))
        return json.dumps(manifest).encode(), files
    return draw(manifests()), files


def write_bundle(root: Path, manifest: bytes, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).write_bytes(data)
    (root / MANIFEST).write_bytes(manifest)
    return root


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bundles())
def test_knack_verify_check_never_crashes_on_a_generated_bundle(bundle):
    root = Path(tempfile.mkdtemp(prefix="knack-fuzz-"))
    try:
        result = verify_bundle(write_bundle(root, *bundle))
        assert isinstance(result.problems, list)
    finally:
        shutil.rmtree(root)


@pytest.fixture(scope="module")
def validator(tmp_path_factory):
    if not (ARTIFACTS / "ClipRegistry.json").exists():
        pytest.skip("the contract artifacts are not built")
    from collector.labeling.network import network_digest

    root = tmp_path_factory.mktemp("fuzz")
    config = Config(data_dir=str(root))
    ledger = open_ledger("", root)
    admin = key("fuzz admin")
    ledger.deploy(admin, admin.address, policy=network_digest(config))
    global DEVICE
    DEVICE = DEVICE.bind(SigningDomain(ledger.domain().chain_id, ledger.domain().registry))
    store = EmbeddedStore(root / "blocks.sqlite")
    yield Validator(ledger, store, admin, root / "validator.sqlite", config)
    ledger.close()
    store.close()


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(bundle=bundles())
def test_the_validator_rejects_every_generated_bundle_with_a_reason_and_never_raises(validator, bundle):
    root = Path(tempfile.mkdtemp(prefix="knack-fuzz-"))
    try:
        cid = validator.store.add(write_bundle(root, *bundle))
    finally:
        shutil.rmtree(root)
    verdict, _ = validator.check(cid, SubmittedBatch(0, DEVICE.address, (cid.digest,), device=DEVICE.address))
    assert not verdict.accepted and isinstance(verdict.reason, Reason)
    assert "\n" not in verdict.detail and len(verdict.detail) <= 400

"""Knack's reward contracts: Solidity sources in src/, compiled artifacts in artifacts/ (committed, rebuilt
offline with `npm ci && node build.mjs`, see README.md) and the Merkle tree the registry computes (merkle.py).
No web3 import here: loading an artifact is reading JSON."""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
ARTIFACTS = HERE / "artifacts"
SOURCES = HERE / "src"
CONTRACTS = ("ClipRegistry", "KnackToken", "NaiveRegistry")


def load_artifact(name: str) -> dict:
    """The artifact of contract `name`: contractName, abi, bytecode, deployedBytecode, compiler, sourceHash."""
    return json.loads((ARTIFACTS / f"{name}.json").read_text())

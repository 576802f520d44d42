"""The network's labeling rules as one digest: the policy, the labeler settings that change a verdict, and the
sha256 of every model file. The registry records the digest its validators must run (`setPolicy`); a
validator whose own digest differs refuses to settle, so every clip is judged by the same rules."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

from collector.bundle import sha256_file
from collector.config import Config, LabelerConfig
from collector.labeling.cards import ModelCard, load_card

DIGEST_VERSION = 1
# The labeler settings that change what a clip's labels and decision are (not where or how fast it runs).
VERDICT_SETTINGS = ("sample_fps", "max_hands", "blur_faces", "face_margin")


def model_cards(config: LabelerConfig) -> list[ModelCard]:
    """Every card the labeler loads, resolved as `Models` resolves them (read, not loaded: no ONNX session)."""
    from collector.labeling.models import MODELS_DIR, VERIFIER, shipped_card

    palm = load_card(Path(config.hand_card) if config.hand_card else shipped_card("palm_detection"))
    landmarks = load_card(palm.path.parent / palm.decode["landmark_card"] if "landmark_card" in palm.decode else shipped_card("hand_landmarks"))
    faces = load_card(Path(config.face_card) if config.face_card else shipped_card("face_detection"))
    return [palm, landmarks, faces, load_card(MODELS_DIR / VERIFIER)] + [load_card(Path(p)) for p in config.extra_cards]


def rules(config: Config) -> dict:
    """What the digest covers, as plain data (shown by `knack doctor` and in a refusal)."""
    return {
        "version": DIGEST_VERSION,
        "policy": asdict(config.policy),
        "labeler": {name: getattr(config.labeler, name) for name in VERDICT_SETTINGS},
        "models": [{"task": card.task, "name": card.name, "sha256": sha256_file(card.model_path)} for card in model_cards(config.labeler)],
    }


def network_digest(config: Config) -> bytes:
    """sha256 of the canonical JSON of `rules(config)`: 32 bytes, as the registry stores it."""
    text = json.dumps(rules(config), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).digest()

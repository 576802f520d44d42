"""Model cards: what a model is, where it came from, and how to feed it and read it.

A card is a TOML file next to its ONNX file. The labeler trusts nothing in it: `check_card` compares it with
the model's real inputs and outputs and the file's hash, and lists every difference in words.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TASKS = {
    # task: output roles the card must name
    "palm_detection": ("boxes", "scores"),
    "face_detection": ("boxes", "scores"),
    "hand_landmarks": ("landmarks", "presence"),
    "classifier": ("scores",),
}
LAYOUTS = ("NCHW", "NHWC")
COLORS = ("RGB", "BGR")
RESIZES = ("letterbox", "stretch")
ACTIVATIONS = ("softmax", "sigmoid", "none")


class CardError(ValueError):
    """A model card that is unreadable, or that does not describe its model."""


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple[int, ...]
    layout: str = "NCHW"
    color: str = "RGB"
    # A pixel p in 0..255 is fed as lo + p / 255 * (hi - lo), then (x - mean) / std per channel.
    range: tuple[float, float] = (0.0, 1.0)
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    resize: str = "letterbox"

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) the frame is resized to."""
        if self.layout == "NCHW":
            return self.shape[3], self.shape[2]
        return self.shape[2], self.shape[1]


@dataclass(frozen=True)
class OutputSpec:
    name: str
    shape: tuple[int, ...]
    role: str


@dataclass(frozen=True)
class ModelCard:
    path: Path
    name: str
    version: str
    task: str
    file: str
    sha256: str
    licence: str
    source: str
    input: InputSpec
    outputs: tuple[OutputSpec, ...]
    description: str = ""
    decode: Mapping[str, Any] = field(default_factory=dict)
    labels: tuple[str, ...] = ()

    @property
    def model_path(self) -> Path:
        return (self.path.parent / self.file).resolve()

    def output(self, role: str) -> OutputSpec | None:
        return next((o for o in self.outputs if o.role == role), None)

    def summary(self) -> dict:
        return {"name": self.name, "version": self.version, "task": self.task, "sha256": self.sha256, "licence": self.licence}


def load_card(path: str | Path) -> ModelCard:
    path = Path(path).expanduser()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CardError(f"model card {path} does not exist") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise CardError(f"model card {path} is not readable TOML: {exc}") from None

    def need(table: Mapping, key: str, kind: type, where: str = ""):
        value = table.get(key)
        if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
            raise CardError(f"model card {path}: {where}{key} = {value!r} is not valid: expected {_words(kind)}")
        return value

    for key in ("name", "version", "task", "file", "sha256", "licence", "source"):
        need(data, key, str)
    if data["task"] not in TASKS:
        raise CardError(f"model card {path}: task = {data['task']!r} is not valid: expected one of {', '.join(TASKS)}")
    raw_in = need(data, "input", dict)
    try:
        spec = InputSpec(
            name=need(raw_in, "name", str, "input."),
            shape=tuple(int(d) for d in need(raw_in, "shape", list, "input.")),
            layout=raw_in.get("layout", "NCHW"),
            color=raw_in.get("color", "RGB"),
            range=tuple(float(v) for v in raw_in.get("range", (0.0, 1.0))),
            mean=tuple(float(v) for v in raw_in.get("mean", (0.0, 0.0, 0.0))),
            std=tuple(float(v) for v in raw_in.get("std", (1.0, 1.0, 1.0))),
            resize=raw_in.get("resize", "letterbox"),
        )
    except (TypeError, ValueError) as exc:
        raise CardError(f"model card {path}: [input] has a value of the wrong type ({exc})") from None
    for key, value, allowed in (("layout", spec.layout, LAYOUTS), ("color", spec.color, COLORS), ("resize", spec.resize, RESIZES)):
        if value not in allowed:
            raise CardError(f"model card {path}: input.{key} = {value!r} is not valid: expected one of {', '.join(allowed)}")
    if len(spec.shape) != 4 or len(spec.range) != 2 or len(spec.mean) != 3 or len(spec.std) != 3 or 0 in spec.std:
        raise CardError(f"model card {path}: [input] needs a 4-dimensional shape, range = [lo, hi], and 3 values each for mean and non-zero std")
    channels = spec.shape[1] if spec.layout == "NCHW" else spec.shape[3]
    if channels != 3 or min(spec.size) <= 0:
        raise CardError(f"model card {path}: input.shape = {list(spec.shape)} is not a {spec.layout} colour image (3 channels, fixed height and width)")
    outputs = []
    for i, raw in enumerate(need(data, "outputs", list)):
        if not isinstance(raw, dict):
            raise CardError(f"model card {path}: outputs[{i}] is not a table")
        outputs.append(
            OutputSpec(
                need(raw, "name", str, f"outputs[{i}]."),
                tuple(int(d) for d in need(raw, "shape", list, f"outputs[{i}].")),
                need(raw, "role", str, f"outputs[{i}]."),
            )
        )
    roles = [o.role for o in outputs]
    missing = [r for r in TASKS[data["task"]] if r not in roles]
    if missing:
        raise CardError(
            f"model card {path}: a {data['task']} model needs outputs with role {', '.join(repr(r) for r in missing)}; the card names roles {roles}"
        )
    labels = tuple(str(v) for v in data.get("labels", ()))
    decode = data.get("decode", {})
    if data["task"] == "classifier":
        if not labels:
            raise CardError(f"model card {path}: a classifier card needs labels = [...], one per score")
        if decode.get("activation", "softmax") not in ACTIVATIONS:
            raise CardError(f"model card {path}: decode.activation = {decode.get('activation')!r} is not valid: expected one of {', '.join(ACTIVATIONS)}")
    return ModelCard(
        path=path,
        name=data["name"],
        version=data["version"],
        task=data["task"],
        file=data["file"],
        sha256=data["sha256"].lower(),
        licence=data["licence"],
        source=data["source"],
        description=data.get("description", ""),
        input=spec,
        outputs=tuple(outputs),
        decode=decode,
        labels=labels,
    )


def _words(kind: type) -> str:
    return {str: "a string", list: "a list", dict: "a table", int: "an integer", float: "a number", bool: "true or false"}[kind]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _shape_problem(what: str, card: tuple[int, ...], model: tuple[int, ...]) -> str | None:
    """Card -1 means "any"; a model's symbolic dimension (-1) accepts any card value."""
    if len(card) != len(model) or any(c != -1 and m != -1 and c != m for c, m in zip(card, model)):
        return f"{what} has shape {list(model)} in the model, the card says {list(card)}"
    return None


def check_card(card: ModelCard, inputs: Mapping[str, tuple], outputs: Mapping[str, tuple]) -> list[str]:
    """Every way the card differs from the model: `inputs`/`outputs` map names to (shape, type) as loaded."""
    problems = []
    digest = sha256_of(card.model_path)
    if digest != card.sha256:
        problems.append(f"{card.file} has sha256 {digest}, the card says {card.sha256}")
    if len(inputs) != 1:
        problems.append(f"the model has {len(inputs)} inputs ({', '.join(inputs)}); the labeler feeds exactly one image input")
    if card.input.name not in inputs:
        problems.append(f"input {card.input.name!r} is not in the model, whose inputs are {', '.join(repr(n) for n in inputs)}")
    else:
        shape, kind = inputs[card.input.name]
        if problem := _shape_problem(f"input {card.input.name!r}", card.input.shape, shape):
            problems.append(problem)
        if kind != "tensor(float)":
            problems.append(f"input {card.input.name!r} is {kind} in the model; the labeler feeds tensor(float)")
    for spec in card.outputs:
        if spec.name not in outputs:
            problems.append(f"output {spec.name!r} ({spec.role}) is not in the model, whose outputs are {', '.join(repr(n) for n in outputs)}")
            continue
        if problem := _shape_problem(f"output {spec.name!r}", spec.shape, outputs[spec.name][0]):
            problems.append(problem)
    scores = card.output("scores")
    if card.task == "classifier" and scores is not None:
        count = outputs[scores.name][0][-1] if scores.name in outputs and outputs[scores.name][0] else scores.shape[-1]
        if count not in (-1, len(card.labels)):
            problems.append(f"the card has {len(card.labels)} labels but output {scores.name!r} has {count} scores")
    return problems

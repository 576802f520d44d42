"""Fixtures for the real parts: a pty sensor from the simulator, video files, a device key, configs."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from collector.config import from_mapping
from collector.identity import load_or_create
from collector.simulator import IMU_FIELDS, SerialSimulator, SimulatorConfig


@pytest.fixture(scope="session")
def device_keystore(tmp_path_factory):
    # pbkdf2 with few rounds keeps the suite fast; production keys use eth-account's scrypt default.
    path = tmp_path_factory.mktemp("key") / "device-key.json"
    load_or_create(path, "test-password", kdf="pbkdf2", iterations=1000)
    return path


@pytest.fixture(scope="session")
def device_key(device_keystore):
    key, _ = load_or_create(device_keystore, "test-password")
    return key


@pytest.fixture
def simulator():
    """Starts simulators on real pseudo-terminals and stops them after the test."""
    started = []

    def start(**kwargs) -> SerialSimulator:
        sim = SerialSimulator(SimulatorConfig(**kwargs)).start()
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.stop()


def write_video(path: Path, frames: int, fps: float = 30.0, size=(320, 240)) -> Path:
    """A real mp4 whose frame i carries i as 8 black/white blocks (robust to compression), see frame_number."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    for i in range(frames):
        image = np.full((size[1], size[0], 3), 90, np.uint8)
        for bit in range(8):
            if i >> bit & 1:
                image[0:40, bit * 40 : bit * 40 + 40] = 255
            else:
                image[0:40, bit * 40 : bit * 40 + 40] = 0
        writer.write(image)
    writer.release()
    return path


def frame_number(image) -> int:
    return sum(1 << bit for bit in range(8) if image[20, bit * 40 + 20].mean() > 128)


@pytest.fixture
def video_file(tmp_path):
    return write_video(tmp_path / "camera.mp4", frames=45)


def imu_serial(port: str, protocol: str = "csv", **extra) -> dict:
    base = {"name": "imu", "port": port, "protocol": protocol, "device_time_field": "t_us", "seq_field": "seq", "nominal_rate": 500.0}
    if protocol == "csv":
        base["csv_columns"] = list(IMU_FIELDS)
    if protocol == "binary":
        from collector.simulator import IMU_BINARY_FORMAT

        base.update(binary_format=IMU_BINARY_FORMAT, binary_fields=list(IMU_FIELDS))
    base.update(extra)
    return base


@pytest.fixture
def make_config(tmp_path):
    def make(cameras=(), serials=(), **recorder):
        data = {"data_dir": str(tmp_path / "data"), "camera": list(cameras), "serial": list(serials)}
        if recorder:
            data["recorder"] = recorder
        return from_mapping(data).validate()

    return make


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


MEDIA = Path(__file__).resolve().parent / "media"  # real photographs, see media/SOURCES.md


def photo_frames(name: str, count: int, view=(0, 100, 640), size=(640, 480), pan: int = 2) -> list:
    """Frames of a real photograph as a 640x480 camera would see it: the 4:3 window `view` = (x, y, width) of
    the photo, panning slowly so that no frame repeats the one before."""
    image = cv2.imread(str(MEDIA / name))
    assert image is not None, f"{MEDIA / name} is missing or unreadable"
    x0, y0, width = view
    height = width * size[1] // size[0]
    frames = []
    for i in range(count):
        x = min(max(0, x0 + (i % 10) * pan), image.shape[1] - width)
        frames.append(cv2.resize(image[y0 : y0 + height, x : x + width], size, interpolation=cv2.INTER_AREA))
    return frames


@pytest.fixture
def make_clip(tmp_path, device_key):
    """Writes a real, signed clip bundle as the recorder does (video.mp4, frames.parquet, manifest) from frames."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from collector.bundle import new_clip_id, seal, write_manifest
    from collector.video import write_video

    clips = tmp_path / "data" / "clips"

    def make(frames, fps: float = 30.0, streams=(), camera=None, **manifest_extra) -> Path:
        clips.mkdir(parents=True, exist_ok=True)
        clip_id = new_clip_id()
        partial = clips / f".partial-{clip_id}"
        partial.mkdir()
        write_video(partial / "video.mp4", frames, fps)  # the pinned codec, as the recorder writes it
        times = [int(i * 1e9 / fps) for i in range(len(frames))]
        pq.write_table(pa.table({"camera": ["cam"] * len(frames), "frame_index": list(range(len(frames))), "capture_ns": times}), partial / "frames.parquet")
        camera = {
            "name": "cam",
            "kind": "camera",
            "source": "test",
            "count": len(frames),
            "dropped": 0,
            "late": 0,
            "lost": 0,
            "parse_errors": {},
            "gaps": [],
            **(camera or {}),
        }
        manifest = {
            "clip_id": clip_id,
            "device_id": device_key.address,
            "contributor": device_key.address,
            "start": {"utc": "2026-01-01T00:00:00Z", "mono_ns": 0},
            "end": {"utc": "2026-01-01T00:00:00Z", "mono_ns": times[-1]},
            "duration_s": len(frames) / fps,
            "streams": [camera, *streams],
            "marks": [],
            "labels": None,
            "quality": None,
            "privacy": None,
            "decision": None,
        }
        manifest.update(manifest_extra)
        write_manifest(partial, manifest, device_key)
        return seal(partial, clips / clip_id)

    return make


def write_colour_classifier(directory: Path, classes=("red", "green", "blue"), **card_changes) -> Path:
    """A small real ONNX classifier (mean colour -> softmax over red/green/blue) and its card; returns the card."""
    import hashlib

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.eye(3, dtype=np.float32) * 20, "W")
    bias = numpy_helper.from_array(np.full(3, -10, np.float32), "B")
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"]),
            helper.make_node("Gemm", ["flat", "W", "B"], ["logits"], transB=1),
            helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
        ],
        "colour",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 64, 64])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 3])],
        [weights, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = directory / "colour.onnx"
    onnx.save(model, str(path))
    card = {
        "name": "colour-test",
        "version": "1",
        "task": "classifier",
        "file": "colour.onnx",
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "licence": "Apache-2.0",
        "source": "built by the tests",
        "input_name": "image",
        "input_shape": "[-1, 3, 64, 64]",
        "output_name": "probs",
        "output_shape": "[-1, 3]",
        "labels": ", ".join(f'"{label}"' for label in classes),
    }
    card.update(card_changes)
    text = f'''name = "{card["name"]}"
version = "{card["version"]}"
task = "{card["task"]}"
file = "{card["file"]}"
sha256 = "{card["sha256"]}"
licence = "{card["licence"]}"
source = "{card["source"]}"
labels = [{card["labels"]}]

[input]
name = "{card["input_name"]}"
shape = {card["input_shape"]}
layout = "NCHW"
color = "RGB"
range = [0.0, 1.0]
resize = "stretch"

[[outputs]]
name = "{card["output_name"]}"
shape = {card["output_shape"]}
role = "scores"

[decode]
activation = "none"
threshold = 0.5
'''
    (directory / "colour.toml").write_text(text)
    return directory / "colour.toml"


def knack_cli(data: Path, tmp_path: Path, timeout: float = 120, **env_extra):
    """`knack ARGS…` as a subprocess on data directory `data`, with no user configuration: returns a function
    of the arguments giving the CompletedProcess (text)."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, KNACK_DATA_DIR=str(data), XDG_CONFIG_HOME=str(tmp_path / "no-config"), **env_extra)
    env.pop("KNACK_CONFIG", None)

    def knack(*args):
        return subprocess.run([sys.executable, "-m", "knack", *args], env=env, capture_output=True, text=True, timeout=timeout)

    return knack

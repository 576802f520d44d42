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
def device_key(tmp_path_factory):
    # pbkdf2 with few rounds keeps the suite fast; production keys use eth-account's scrypt default.
    key, _ = load_or_create(tmp_path_factory.mktemp("key") / "device-key.json", "test-password", kdf="pbkdf2", iterations=1000)
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

"""Builds the configured sources; nothing else in the code needs to know which implementation it has."""

from __future__ import annotations

from collector.config import Config
from collector.sources.base import Source
from collector.sources.camera import CameraSource
from collector.sources.joints import make_joint_source
from collector.sources.serial_port import SerialSource


def make_sources(config: Config) -> list[Source]:
    return [CameraSource(c) for c in config.camera] + [SerialSource(s) for s in config.serial] + [make_joint_source(j) for j in config.joints]

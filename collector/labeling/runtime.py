"""The model-runtime seam: one onnxruntime session per model, on the execution provider the config allows.

The provider that actually runs is read back from the session (onnxruntime silently drops a provider it
cannot load), so what the log, `knack doctor` and every manifest say is what ran.
"""

from __future__ import annotations

import ctypes
import logging
import os
from pathlib import Path
from typing import Protocol

import numpy as np

from collector.config import Device

log = logging.getLogger("knack.labeler")

CPU, CUDA, TENSORRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"


class Model(Protocol):
    """A loaded model: named float32 inputs in, named outputs out."""

    provider: str

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def gpu_present() -> bool:
    """An NVIDIA driver is loaded (checked without touching CUDA, which prints pages of errors when absent)."""
    return Path("/dev/nvidiactl").exists() or Path("/proc/driver/nvidia/version").exists()


def tensorrt_installed() -> bool:
    for name in ("libnvinfer.so.10", "libnvinfer.so.8", "nvinfer_10.dll"):
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    return False


def choose_providers(device: Device, available: list[str], gpu: bool, tensorrt: bool) -> tuple[list[str], str | None]:
    """The providers to ask for, best first, and a sentence for the log when the request cannot be met."""
    wants_gpu = device in (Device.AUTO, Device.CUDA, Device.TENSORRT)
    if not wants_gpu:
        return [CPU], None
    missing = None
    if CUDA not in available:
        missing = "this onnxruntime build has no CUDA provider (install onnxruntime-gpu)"
    elif not gpu:
        missing = "no NVIDIA GPU or driver was found"
    if missing:
        asked = "" if device is Device.AUTO else f"labeler.device = {device.value!r} asks for the GPU, but "
        return [CPU], f"{asked}{missing}: labeling runs on the CPU"
    providers = [CUDA, CPU]
    if TENSORRT in available and (device is Device.TENSORRT or (device is Device.AUTO and tensorrt)):
        if tensorrt:
            providers.insert(0, TENSORRT)
            return providers, None
        return providers, "tensorrt was requested but the TensorRT libraries are not installed: labeling runs with CUDA"
    return providers, None


class OnnxModel:
    """An onnxruntime InferenceSession created once, with the provider chosen by `choose_providers`."""

    def __init__(self, path: Path, device: Device = Device.AUTO, threads: int = 0, cache_dir: Path | None = None):
        import onnxruntime as ort

        self.path = Path(path)
        wanted, note = choose_providers(device, ort.get_available_providers(), gpu_present(), tensorrt_installed())
        options = ort.SessionOptions()
        # Idle onnxruntime threads spin by default, taking the core that decodes and writes the video.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        provider_options = []
        for name in wanted:
            if name == TENSORRT and cache_dir is not None:
                cache_dir.mkdir(parents=True, exist_ok=True)
                provider_options.append({"trt_engine_cache_enable": "True", "trt_engine_cache_path": str(cache_dir)})
            else:
                provider_options.append({})
        self.session = ort.InferenceSession(str(self.path), options, providers=wanted, provider_options=provider_options)
        self.provider = self.session.get_providers()[0]
        if note is None and wanted[0] != self.provider:
            note = f"{wanted[0]} could not be started (see onnxruntime's message above): labeling runs on {self.provider}"
        self.note = note
        self.inputs = {i.name: (tuple(_dim(d) for d in i.shape), i.type) for i in self.session.get_inputs()}
        self.outputs = {o.name: (tuple(_dim(d) for d in o.shape), o.type) for o in self.session.get_outputs()}
        self._output_names = list(self.outputs)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self._output_names, self.session.run(self._output_names, feeds)))


def _dim(d) -> int:
    """Fixed dimensions as ints; symbolic or unknown ones as -1."""
    return d if isinstance(d, int) and d > 0 else -1


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "knack" / "tensorrt"

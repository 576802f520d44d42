"""Execution providers: the GPU when it is there, one clear line and the CPU when it is not."""

import logging

from collector.config import Device, LabelerConfig
from collector.labeling.runtime import CPU, CUDA, TENSORRT, choose_providers, gpu_present

ALL = [TENSORRT, CUDA, CPU]


def test_cpu_is_used_when_asked():
    assert choose_providers(Device.CPU, ALL, gpu=True, tensorrt=True) == ([CPU], None)


def test_cuda_with_cpu_behind_it_when_a_gpu_is_present():
    assert choose_providers(Device.CUDA, ALL, gpu=True, tensorrt=False) == ([CUDA, CPU], None)
    assert choose_providers(Device.AUTO, ALL, gpu=True, tensorrt=False) == ([CUDA, CPU], None)


def test_tensorrt_first_where_installed():
    assert choose_providers(Device.AUTO, ALL, gpu=True, tensorrt=True) == ([TENSORRT, CUDA, CPU], None)
    providers, note = choose_providers(Device.TENSORRT, ALL, gpu=True, tensorrt=False)
    assert providers == [CUDA, CPU] and "TensorRT libraries are not installed" in note


def test_cuda_requested_without_a_gpu_falls_back_to_cpu_with_a_reason():
    providers, note = choose_providers(Device.CUDA, ALL, gpu=False, tensorrt=False)
    assert providers == [CPU]
    assert note == "labeler.device = 'cuda' asks for the GPU, but no NVIDIA GPU or driver was found: labeling runs on the CPU"
    assert choose_providers(Device.AUTO, ALL, gpu=False, tensorrt=False) == ([CPU], "no NVIDIA GPU or driver was found: labeling runs on the CPU")
    providers, note = choose_providers(Device.CUDA, [CPU], gpu=True, tensorrt=False)
    assert providers == [CPU] and "has no CUDA provider" in note


def test_real_models_requested_on_cuda_run_on_the_cpu_here_and_say_so_once(caplog):
    from collector.labeling.models import Models

    if gpu_present():
        import pytest

        pytest.skip("this machine has a GPU: the fallback cannot be shown here")
    with caplog.at_level(logging.INFO, logger="knack.labeler"):
        models = Models(LabelerConfig(device=Device.CUDA, threads=1))
    assert models.provider == CPU
    assert {m["provider"] for m in models.describe()} == {CPU}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "cuda" in warnings[0].getMessage() and "runs on the CPU" in warnings[0].getMessage()

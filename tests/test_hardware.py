"""Device and dtype choices."""

from __future__ import annotations

import pytest
import torch

from ttsd.engine import hardware


def test_auto_dtype_is_bf16_on_gpus_and_on_cpus_with_hardware_bf16(monkeypatch):
    assert hardware.pick_dtype("auto", "cuda") == torch.bfloat16
    assert hardware.pick_dtype("float32", "cuda") == torch.float32
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: True)
    assert hardware.pick_dtype("auto", "cpu") == torch.bfloat16
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: False)
    assert hardware.pick_dtype("auto", "cpu") == torch.float32
    assert hardware.pick_dtype("bfloat16", "cpu") == torch.bfloat16
    assert hardware.dtype_name(torch.bfloat16) == "bfloat16"


@pytest.mark.parametrize("cuda_devices", [0, 1, 4])
def test_device_choice_follows_cuda(monkeypatch, cuda_devices):
    """Both branches on any machine: torch's answers about CUDA are set as a machine with
    `cuda_devices` GPUs would give them."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda_devices > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: cuda_devices)
    assert hardware.pick_device("auto") == ("cuda" if cuda_devices else "cpu")
    assert hardware.gpu_count() == cuda_devices
    assert hardware.pick_device("cpu") == "cpu" and hardware.pick_device("cuda:1") == "cuda:1"  # as given

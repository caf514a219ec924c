"""Device and dtype choices."""

from __future__ import annotations

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


def test_device_choice_follows_cuda():
    assert hardware.pick_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert hardware.pick_device("cpu") == "cpu"
    assert hardware.gpu_count() == (torch.cuda.device_count() if torch.cuda.is_available() else 0)

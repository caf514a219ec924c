"""Which device and dtype the trainer and the samplers run on, and how many GPUs there are.

Light on purpose (torch is imported inside the functions): the samplers, the policy and the
methods all ask these questions, so none of them has to import another to answer them.
"""

from __future__ import annotations

from typing import Any


def pick_device(device: str = "auto") -> str:
    """'auto': the GPU when there is one, else the CPU; anything else is returned as given."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def gpu_count() -> int:
    """GPUs this process can see (0 on a machine without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def cpu_has_native_bf16() -> bool:
    """True when this CPU multiplies bfloat16 in hardware (x86 AVX512-BF16 or AMX)."""
    import torch

    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def pick_dtype(dtype: str, device: str) -> Any:
    """'auto': bfloat16 on a GPU, and on a CPU that multiplies bf16 in hardware; float32 on other CPUs.

    Why: on the 2-core AVX512-BF16 machine this project is developed on, bf16 matmuls run 2.4x the
    float32 rate and SmolLM2's forward 2.1x (benchmarks/bench_solve.py --dtype); without hardware
    support bf16 is emulated and slower than float32."""
    import torch

    if dtype == "auto":
        if device == "cpu" and not cpu_has_native_bf16():
            return torch.float32
        return torch.bfloat16
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def dtype_name(dtype: Any) -> str:
    """torch.bfloat16 -> 'bfloat16' (the spelling configs and vLLM use)."""
    return str(dtype).removeprefix("torch.")


def synchronize(device: Any) -> None:
    """Wait for the work queued on `device` (a CUDA device or its name); nothing elsewhere.

    Why: CUDA kernels run asynchronously, so a timer read right after launching them measures the
    launches, not the work. Every timer around GPU work reads after this."""
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize(device)

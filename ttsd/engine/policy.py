"""The trainer-side policy: a base Hugging Face causal LM with PEFT LoRA adapters.

One base model carries named LoRA adapters: "default" (the student, trained) and, on request, more
(e.g. "teacher" for an EMA teacher, see `add_adapter`). Only adapters change; the base stays frozen.

Adapter tensors are exchanged under *canonical keys*: the module path with the adapter name removed,
e.g. `base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`, so the same key addresses the
student's and the teacher's copy of a weight. `adapter_parameters(name)` returns the live
`nn.Parameter`s (for in-place updates such as an EMA, under `torch.no_grad()`);
`adapter_state(name)` returns detached copies; `load_adapter_state(state, name)` copies values in.

`save_adapter(dir)` writes the PEFT format (adapter_config.json + adapter_model.safetensors) that
`PeftModel.from_pretrained` and vLLM's `LoRARequest` load.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Literal

from pydantic import BaseModel, Field

DEFAULT_TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
STUDENT = "default"


class LoraSettings(BaseModel):
    """LoRA hyper-parameters. The update is W + (alpha / rank) * B A, with B = 0 at start."""

    rank: int = Field(16, ge=1)
    alpha: float = Field(32.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: list(DEFAULT_TARGET_MODULES))


def pick_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


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


class Policy:
    """Base model + LoRA adapters, the tokenizer, and the operations the trainer needs."""

    def __init__(
        self,
        model_path: str | Path,
        lora: LoraSettings | None = None,
        device: str = "auto",
        dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto",
        gradient_checkpointing: bool = True,
    ) -> None:
        import torch
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model_path = Path(model_path)
        self.lora = lora or LoraSettings()
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        base = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=self.dtype).to(self.device)
        base.requires_grad_(False)
        if gradient_checkpointing:
            # Active only in train mode (the scorer's student pass); generate runs in eval mode.
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.lora_config = LoraConfig(
            r=self.lora.rank,
            lora_alpha=self.lora.alpha,
            lora_dropout=self.lora.dropout,
            target_modules=list(self.lora.target_modules),
            bias="none",
            task_type="CAUSAL_LM",
        )
        self.model = get_peft_model(base, self.lora_config, adapter_name=STUDENT)
        self.model.eval()
        self._torch = torch

    # ----- adapters -------------------------------------------------------------------------
    @property
    def adapter_names(self) -> list[str]:
        return list(self.model.peft_config)

    def add_adapter(self, name: str, copy_from: str | None = STUDENT) -> None:
        """Add a second adapter (same LoRA config) on the same base, frozen, optionally a copy of another."""
        if name in self.model.peft_config:
            raise ValueError(f"adapter {name!r} exists")
        with self._keep_requires_grad():
            self.model.add_adapter(name, self.lora_config)
        for parameter in self.adapter_parameters(name).values():
            parameter.requires_grad_(False)
        if copy_from is not None:
            self.load_adapter_state(self.adapter_state(copy_from), name)

    def _adapter_key(self, parameter_name: str, adapter: str) -> str | None:
        marker = f".{adapter}."
        if "lora_" not in parameter_name or marker not in parameter_name:
            return None
        return parameter_name.replace(marker, ".")

    def adapter_parameters(self, name: str = STUDENT) -> dict[str, Any]:
        """The live LoRA parameters of adapter `name`, under canonical keys (shared across adapters)."""
        found = {}
        for parameter_name, parameter in self.model.named_parameters():
            key = self._adapter_key(parameter_name, name)
            if key is not None:
                found[key] = parameter
        if not found:
            raise KeyError(f"no adapter named {name!r} (have {self.adapter_names})")
        return found

    def trainable_parameters(self) -> list[Any]:
        """The student's LoRA parameters: what the optimizer updates."""
        return list(self.adapter_parameters(STUDENT).values())

    def adapter_state(self, name: str = STUDENT) -> dict[str, Any]:
        """Detached copies of adapter `name`'s tensors (canonical keys)."""
        return {key: p.detach().clone() for key, p in self.adapter_parameters(name).items()}

    def load_adapter_state(self, state: dict[str, Any], name: str = STUDENT) -> None:
        """Copy tensors (canonical keys, as from `adapter_state`) into adapter `name`."""
        live = self.adapter_parameters(name)
        missing = set(live) - set(state)
        if missing:
            raise KeyError(f"state lacks {len(missing)} adapter tensors, e.g. {sorted(missing)[0]}")
        with self._torch.no_grad():
            for key, parameter in live.items():
                parameter.copy_(state[key])

    @contextmanager
    def _keep_requires_grad(self) -> Iterator[None]:
        """peft's set_adapter/add_adapter flip requires_grad; keep the trainer's choice instead."""
        flags = {name: p.requires_grad for name, p in self.model.named_parameters()}
        try:
            yield
        finally:
            for name, p in self.model.named_parameters():
                if name in flags:
                    p.requires_grad_(flags[name])

    @contextmanager
    def using_adapter(self, name: str | None) -> Iterator[Any]:
        """Run the model with adapter `name` active (None: base weights only); yields the model."""
        previous = self.model.active_adapter
        with self._keep_requires_grad():
            if name is None:
                with self.model.disable_adapter():
                    yield self.model
                return
            self.model.set_adapter(name)
            try:
                yield self.model
            finally:
                self.model.set_adapter(previous)

    def save_adapter(self, directory: str | Path, name: str = STUDENT) -> Path:
        """Write adapter `name` in PEFT format (what PeftModel.from_pretrained and vLLM load)."""
        from peft.utils import get_peft_model_state_dict
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = get_peft_model_state_dict(self.model, adapter_name=name)
        save_file({k: v.detach().to("cpu").contiguous() for k, v in state.items()}, directory / "adapter_model.safetensors")
        config = copy.deepcopy(self.model.peft_config[name])
        config.base_model_name_or_path = str(self.model_path)
        config.inference_mode = True
        config.save_pretrained(str(directory))
        return directory

    # ----- convenience ----------------------------------------------------------------------
    def sampler(self, adapter: str | None = STUDENT, **kwargs: Any) -> Any:
        """An HFSampler that samples from this in-memory model (no weight copies)."""
        from ttsd.engine.hf_sampler import HFSampler

        return HFSampler(policy=self, adapter=adapter, **kwargs)

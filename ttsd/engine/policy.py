"""The trainer-side policy: a base Hugging Face causal LM with one PEFT LoRA adapter, the student.

Only the adapter changes; the base stays frozen. `adapter_parameters()` returns the live
`nn.Parameter`s under the keys of `ttsd.engine.lora` (for in-place updates, under
`torch.no_grad()`); `adapter_state()` returns detached copies; `load_adapter_state(state)` copies
values in. `base_weights()` runs the model with the adapter switched off (the frozen teacher, the
trust-region teacher's reference).

`save_adapter(dir)` writes the PEFT folder (adapter_config.json + adapter_model.safetensors) that
`PeftModel.from_pretrained` and vLLM's `LoRARequest` load, atomically (`ttsd.engine.lora.write_adapter`).

A policy loads from a model folder (`Policy(path, ...)`) or wraps a model already in memory
(`Policy.from_model(model)`: benchmarks build random-weight models with real shapes).

Several students on one base model (`ttsd.methods.scheduler`, concurrent sdpo runs):
`add_student(name, seed)` adds another adapter to the same PEFT model and returns a Policy whose
adapter it is (every method above then reads and writes that adapter); `activate()` makes it the
one the model's forward uses (the trainer and scorer run whichever is active); `remove_student()`
deletes it. The first adapter, `STUDENT`, stays (untrained when only added students learn).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Literal

from ttsd.engine.hardware import pick_device, pick_dtype
from ttsd.engine.lora import DEFAULT_TARGET_MODULES, STUDENT, LoraSettings, adapter_parameters, write_adapter

__all__ = ["DEFAULT_TARGET_MODULES", "STUDENT", "LoraSettings", "Policy"]


class Policy:
    """Base model + the student's LoRA adapter, the tokenizer, and the operations the trainer needs."""

    def __init__(
        self,
        model_path: str | Path,
        lora: LoraSettings | None = None,
        device: str = "auto",
        dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto",
        gradient_checkpointing: bool = True,
    ) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        device = pick_device(device)
        torch_dtype = pick_dtype(dtype, device)
        base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch_dtype).to(device)
        self._wrap(base, AutoTokenizer.from_pretrained(model_path), lora, gradient_checkpointing, Path(model_path))

    @classmethod
    def from_model(
        cls, base: Any, tokenizer: Any = None, lora: LoraSettings | None = None, gradient_checkpointing: bool = True
    ) -> "Policy":
        """A policy around a causal LM already in memory (its device and dtype are kept)."""
        policy = cls.__new__(cls)
        policy._wrap(base, tokenizer, lora, gradient_checkpointing, model_path=None)
        return policy

    def _wrap(self, base: Any, tokenizer: Any, lora: LoraSettings | None, gradient_checkpointing: bool,
              model_path: Path | None) -> None:
        from peft import LoraConfig, get_peft_model

        self.model_path = model_path
        self.tokenizer = tokenizer
        self.lora = lora or LoraSettings()
        parameter = next(base.parameters())
        self.device, self.dtype = str(parameter.device), parameter.dtype
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
        self.adapter = STUDENT

    # ----- several students on one base model -------------------------------------------------
    def add_student(self, name: str, seed: int) -> "Policy":
        """A new adapter `name` on this base model, LoRA's A drawn from torch's generator seeded
        `seed` (B = 0), as a Policy whose adapter it is. Its initial weights depend on `seed` only,
        not on what ran before (torch's global generator is left as it was)."""
        import copy

        import torch

        if name in self.model.peft_config:
            raise ValueError(f"the model already has an adapter named {name!r}")
        devices = [torch.device(self.device).index or 0] if self.device.startswith("cuda") else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            self.model.add_adapter(name, copy.deepcopy(self.lora_config))
        student = copy.copy(self)
        student.adapter = name
        student.activate()
        return student

    def activate(self) -> None:
        """Make this policy's adapter the one the model computes with (and the trainable one)."""
        if self.model.active_adapter != self.adapter:
            self.model.set_adapter(self.adapter)
        for parameter in self.adapter_parameters().values():
            parameter.requires_grad_(True)

    def remove_student(self) -> None:
        """Delete this policy's adapter from the model (an added student; not `STUDENT`)."""
        if self.adapter == STUDENT:
            raise ValueError(f"the first adapter {STUDENT!r} stays")
        if self.model.active_adapter == self.adapter:
            self.model.set_adapter(STUDENT)
        self.model.delete_adapter(self.adapter)

    # ----- the adapter ------------------------------------------------------------------------
    def adapter_parameters(self) -> dict[str, Any]:
        """The student's live LoRA parameters (keys: `ttsd.engine.lora`)."""
        return adapter_parameters(self.model, self.adapter)

    def trainable_parameters(self) -> list[Any]:
        """The student's LoRA parameters: what the optimizer updates."""
        return list(self.adapter_parameters().values())

    def adapter_state(self) -> dict[str, Any]:
        """Detached copies of the student's adapter tensors."""
        return {key: p.detach().clone() for key, p in self.adapter_parameters().items()}

    def load_adapter_state(self, state: dict[str, Any]) -> None:
        """Copy tensors (keyed as by `adapter_state`) into the student's adapter."""
        import torch

        live = self.adapter_parameters()
        missing = set(live) - set(state)
        if missing:
            raise KeyError(f"state lacks {len(missing)} adapter tensors, e.g. {sorted(missing)[0]}")
        with torch.no_grad():
            for key, parameter in live.items():
                parameter.copy_(state[key])

    @contextmanager
    def base_weights(self) -> Iterator[Any]:
        """Run the model with the adapter switched off; yields the model.

        PEFT turns requires_grad back on for the adapter when it re-enables it; the trainer's own
        flags are restored instead."""
        flags = {name: p.requires_grad for name, p in self.model.named_parameters()}
        try:
            with self.model.disable_adapter():
                yield self.model
        finally:
            for name, p in self.model.named_parameters():
                p.requires_grad_(flags[name])

    def save_adapter(self, directory: str | Path) -> Path:
        """Write the student's adapter as a PEFT folder (what PeftModel.from_pretrained and vLLM load),
        atomically (`ttsd.engine.lora.write_adapter`)."""
        return write_adapter(self.model, directory, self.adapter, base_model=str(self.model_path or ""))

    # ----- memory and sampling ----------------------------------------------------------------
    def release_cached_memory(self) -> None:
        """Hand the trainer's cached, unused GPU blocks back to the driver (so a woken vLLM engine
        on the same card can take them); nothing to do on a CPU."""
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()

    def sampler(self, **kwargs: Any) -> Any:
        """An HFSampler that samples from this in-memory model (no weight copies)."""
        from ttsd.engine.hf_sampler import HFSampler

        return HFSampler(policy=self, **kwargs)

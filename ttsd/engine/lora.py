"""LoRA: the adapter's settings (every default is written here, once) and its parameters.

The update of a wrapped weight is W + (alpha / rank) · B A, with B = 0 at the start, so a fresh
adapter leaves the model unchanged.

Key convention: an adapter's parameters are addressed by their module path with the adapter's
name removed, e.g. `base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight` for PEFT's
`...q_proj.lora_A.default.weight`. The trainer's saved state, the EMA teacher's copy and resume
all use these keys (`adapter_parameters`). Files for PEFT and vLLM keep PEFT's own state-dict
keys (`Policy.save_adapter`, `ttsd.engine.vllm_sampler.write_lora_adapter`).

Light on purpose (pydantic only): `ttsd.config` takes its LoRA defaults from here.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
STUDENT = "default"  # the name of the trained adapter in the PEFT model


class LoraSettings(BaseModel):
    """LoRA hyper-parameters. The update is W + (alpha / rank) · B A, with B = 0 at start."""

    rank: int = Field(16, ge=1)
    alpha: float = Field(32.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: list(DEFAULT_TARGET_MODULES))


def adapter_parameters(model: Any, adapter_name: str = STUDENT) -> dict[str, Any]:
    """The live LoRA parameters of one adapter of a PEFT model, under the keys described above.

    PEFT names them `<module>.lora_A.<adapter>.weight` (also lora_B, lora_embedding_A/B,
    lora_magnitude_vector): a parameter belongs to the adapter when a `lora_*` component of its
    path is directly followed by the adapter's name, and its key is the path without that name.
    """
    selected = {}
    for name, parameter in model.named_parameters():
        parts = name.split(".")
        for index, (part, following) in enumerate(zip(parts, parts[1:])):
            if part.startswith("lora_") and following == adapter_name:
                selected[".".join(parts[: index + 1] + parts[index + 2 :])] = parameter
                break
    if not selected:
        raise KeyError(f"the model has no LoRA parameters for adapter {adapter_name!r}")
    return selected

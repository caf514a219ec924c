"""LoRA: the adapter's settings (every default is written here, once), its tensors, and its files.

The update of a wrapped weight is W + (alpha / rank) · B A, with B = 0 at the start, so a fresh
adapter leaves the model unchanged.

Key convention: an adapter's parameters are addressed by their module path with the adapter's
name removed, e.g. `base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight` for PEFT's
`...q_proj.lora_A.default.weight` (`adapter_parameters`, the one walk over a model's adapter
tensors). The trainer's saved state, the EMA teacher's copy and resume all use these keys. They are
also PEFT's state-dict keys for a plain LoRA adapter; files for PEFT and vLLM, and the tensors the
vLLM engine loads from memory, use PEFT's keys (`peft_adapter_tensors`, which takes the walk's
answer where the two agree and PEFT's own where they do not, e.g. when PEFT saves embedding layers).

`write_adapter` writes the PEFT folder (`adapter_config.json` + `adapter_model.safetensors`) that
`PeftModel.from_pretrained` and vLLM's `LoRARequest` load, atomically: a reader finds the folder
complete or absent, never half-written.

Light on purpose (pydantic only at import): `ttsd.config` takes its LoRA defaults from here.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
import weakref
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
STUDENT = "default"  # the name of the trained adapter in the PEFT model
ADAPTER_CONFIG = "adapter_config.json"  # the files of a PEFT adapter folder
ADAPTER_WEIGHTS = "adapter_model.safetensors"


class LoraSettings(BaseModel):
    """LoRA hyper-parameters. The update is W + (alpha / rank) · B A, with B = 0 at start."""

    rank: int = Field(16, ge=1)
    alpha: float = Field(32.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: list(DEFAULT_TARGET_MODULES))


# ----- the adapter's tensors ------------------------------------------------------------------
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


# (model, adapter name) -> its live parameters, once PEFT's state dict was found to name exactly
# them: PEFT's state-dict walk over the whole model costs ~80 ms for SmolLM2, and even listing its
# parameters ~10 ms, while an adapter's parameters never change identity.
_PEFT_KEYS_AGREE: "weakref.WeakKeyDictionary[Any, dict[str, dict[str, Any]]]" = weakref.WeakKeyDictionary()


def peft_adapter_tensors(model: Any, adapter_name: str = STUDENT) -> dict[str, Any]:
    """One adapter's tensors under PEFT's state-dict keys (`get_peft_model_state_dict`): the live
    parameters of `adapter_parameters` when PEFT's state dict holds exactly those (plain LoRA;
    checked once per model and adapter), else PEFT's own state dict (e.g. with the embedding layers
    it adds when they are LoRA targets)."""
    per_model = _PEFT_KEYS_AGREE.setdefault(model, {})
    live = per_model.get(adapter_name)
    if live is not None:
        return dict(live)
    from peft import get_peft_model_state_dict

    state = get_peft_model_state_dict(model, adapter_name=adapter_name)
    live = adapter_parameters(model, adapter_name)
    agree = state.keys() == live.keys() and all(
        state[key].data_ptr() == live[key].data_ptr() and state[key].shape == live[key].shape for key in state
    )
    if not agree:
        return state
    per_model[adapter_name] = live
    return dict(live)


def adapter_bytes(model: Any, adapter_name: str = STUDENT, dtype: Any = None) -> int:
    """Bytes of an adapter's tensors (PEFT's keys) in `dtype` (their own dtype when None)."""
    import torch

    def size(tensor: Any) -> int:
        return tensor.numel() * (torch.empty((), dtype=dtype).element_size() if dtype is not None else tensor.element_size())

    return sum(size(tensor) for tensor in peft_adapter_tensors(model, adapter_name).values())


# ----- the adapter's files ----------------------------------------------------------------------
def write_adapter(
    model: Any, directory: str | Path, adapter_name: str = STUDENT, *, dtype: Any = None, base_model: str | None = None
) -> Path:
    """Write one adapter of a PEFT model as a PEFT folder that PeftModel.from_pretrained and vLLM load;
    returns the folder.

    The files: `adapter_model.safetensors` (PEFT's keys, CPU tensors, cast to `dtype` when given:
    the engine's serving dtype) and `adapter_config.json` (the adapter's PEFT config with
    `inference_mode` on, and `base_model_name_or_path` replaced when `base_model` is given). No model
    card and no hub look-ups (what `PeftModel.save_pretrained` adds): a few milliseconds.

    Atomic: the files are written to a new folder beside `directory`, which then takes its name
    (an older folder of that name is moved aside first, then deleted). A reader — the vLLM engine,
    a resumed run, a run stopped mid-write — finds `directory` complete (old or new) or absent,
    never half-written.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for key, tensor in peft_adapter_tensors(model, adapter_name).items():
        tensor = tensor.detach()
        if dtype is not None:
            tensor = tensor.to(dtype)
        tensors[key] = tensor.to("cpu").contiguous()
    config = model.peft_config[adapter_name].to_dict()
    config["inference_mode"] = True
    if base_model is not None:
        config["base_model_name_or_path"] = base_model
    staging = _sibling(directory, "new")
    staging.mkdir()
    try:
        save_file(tensors, str(staging / ADAPTER_WEIGHTS), metadata={"format": "pt"})
        write_adapter_config(staging, config)
        _replace_folder(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def write_adapter_config(directory: Path, config: dict[str, Any]) -> None:
    """Write a PEFT config (as `PeftConfig.to_dict` gives it) as `directory/adapter_config.json`,
    formatted as PEFT writes it (sets become sorted lists)."""
    (Path(directory) / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True, default=_json_default))


def _sibling(directory: Path, role: str) -> Path:
    """A fresh hidden name beside `directory` (same file system, so a rename is atomic)."""
    return directory.parent / f".{directory.name}.{role}-{uuid.uuid4().hex[:12]}"


def _replace_folder(new: Path, target: Path) -> None:
    """Rename folder `new` to `target`. A rename cannot replace a folder that has files, so an
    existing `target` is renamed aside first and deleted once `new` has its name."""
    if not os.path.lexists(target):
        os.rename(new, target)
        return
    old = _sibling(target, "old")
    os.rename(target, old)
    os.rename(new, target)
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink()


def _json_default(value: Any) -> Any:
    if isinstance(value, set):
        return sorted(value)
    return str(value)

"""The trainer-side policy: LoRA adapters on the tiny random model."""

from __future__ import annotations

import json

import pytest
import torch

from ttsd.engine.policy import DEFAULT_TARGET_MODULES, STUDENT, LoraSettings, Policy


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    torch.manual_seed(0)
    return Policy(tiny_model_dir, lora=LoraSettings(rank=4, alpha=8), device="cpu", dtype="float32")


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0]


def test_lora_on_every_projection_and_only_lora_trains(policy):
    params = policy.adapter_parameters()
    for module in DEFAULT_TARGET_MODULES:
        assert any(f".{module}.lora_A.weight" in key for key in params), module
    trainable = {n for n, p in policy.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n and f".{STUDENT}." in n for n in trainable)
    assert len(policy.trainable_parameters()) == len(trainable)
    assert policy.device == "cpu" and policy.dtype == torch.float32


def test_teacher_adapter_copies_student_and_stays_frozen(policy):
    ids = [5, 9, 14, 3]
    with torch.no_grad():
        for p in policy.trainable_parameters():
            p.copy_(0.05 * torch.randn_like(p))
    if "teacher" not in policy.adapter_names:
        policy.add_adapter("teacher")
    policy.load_adapter_state(policy.adapter_state(STUDENT), "teacher")
    assert set(policy.adapter_parameters("teacher")) == set(policy.adapter_parameters(STUDENT))
    assert all(not p.requires_grad for p in policy.adapter_parameters("teacher").values())
    student_out = _logits(policy.model, ids)
    with policy.using_adapter("teacher") as model:
        torch.testing.assert_close(_logits(model, ids), student_out)
    # the teacher diverges after an in-place update of its live parameters (what an EMA does)
    with torch.no_grad():
        for p in policy.adapter_parameters("teacher").values():
            p.mul_(0.0)
    with policy.using_adapter("teacher") as model:
        teacher_out = _logits(model, ids)
    with policy.using_adapter(None) as model:
        base_out = _logits(model, ids)
    torch.testing.assert_close(teacher_out, base_out)  # zero LoRA == base weights
    assert not torch.allclose(teacher_out, student_out)
    # switching adapters leaves the student active and trainable, the teacher frozen
    assert policy.model.active_adapter == STUDENT
    assert all(p.requires_grad for p in policy.trainable_parameters())
    assert all(not p.requires_grad for p in policy.adapter_parameters("teacher").values())
    torch.testing.assert_close(_logits(policy.model, ids), student_out)


def test_saved_adapter_reloads_with_peft(policy, tiny_model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    with torch.no_grad():
        for p in policy.trainable_parameters():
            p.copy_(0.05 * torch.randn_like(p))
    saved = policy.save_adapter(tmp_path / "adapter")
    config = json.loads((saved / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["lora_alpha"] == 8
    assert set(config["target_modules"]) == set(DEFAULT_TARGET_MODULES)
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), saved)
    ids = [7, 2, 30, 11, 4]
    torch.testing.assert_close(_logits(reloaded, ids), _logits(policy.model, ids), atol=1e-6, rtol=0)


def test_state_round_trip_and_missing_keys(policy):
    state = policy.adapter_state()
    changed = {k: v + 1.0 for k, v in state.items()}
    policy.load_adapter_state(changed)
    assert all(torch.equal(policy.adapter_parameters()[k].detach(), changed[k]) for k in state)
    policy.load_adapter_state(state)
    with pytest.raises(KeyError):
        policy.load_adapter_state({})
    with pytest.raises(KeyError):
        policy.adapter_parameters("nope")


def test_auto_dtype_is_bf16_on_gpus_and_on_cpus_with_hardware_bf16(monkeypatch):
    import torch

    from ttsd.engine import policy as policy_module

    assert policy_module.pick_dtype("auto", "cuda") == torch.bfloat16
    assert policy_module.pick_dtype("float32", "cuda") == torch.float32
    monkeypatch.setattr(policy_module, "cpu_has_native_bf16", lambda: True)
    assert policy_module.pick_dtype("auto", "cpu") == torch.bfloat16
    monkeypatch.setattr(policy_module, "cpu_has_native_bf16", lambda: False)
    assert policy_module.pick_dtype("auto", "cpu") == torch.float32
    assert policy_module.pick_dtype("bfloat16", "cpu") == torch.bfloat16
    assert policy_module.dtype_name(torch.bfloat16) == "bfloat16"

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


def test_base_weights_switch_the_adapter_off_and_keep_it_trainable(policy):
    ids = [5, 9, 14, 3]
    with torch.no_grad():
        for p in policy.trainable_parameters():
            p.copy_(0.05 * torch.randn_like(p))
    student_out = _logits(policy.model, ids)
    with policy.base_weights() as model:
        base_out = _logits(model, ids)
    with torch.no_grad():
        plain = policy.model.get_base_model()  # the wrapped LM without the LoRA deltas ...
        for p in policy.trainable_parameters():
            p.zero_()  # ... equals the LM whose LoRA B (and A) are zero
        torch.testing.assert_close(_logits(plain, ids), base_out)
    assert not torch.allclose(base_out, student_out)
    assert all(p.requires_grad for p in policy.trainable_parameters())


def test_from_model_wraps_a_model_in_memory(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    wrapped = Policy.from_model(base, lora=LoraSettings(rank=2, alpha=4), gradient_checkpointing=False)
    assert wrapped.device == "cpu" and wrapped.dtype == torch.float32 and wrapped.tokenizer is None
    assert {p.shape[0] for k, p in wrapped.adapter_parameters().items() if "lora_A" in k} == {2}
    assert set(wrapped.adapter_parameters()) == set(Policy(tiny_model_dir, lora=LoraSettings(rank=2, alpha=4)).adapter_parameters())


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


def test_students_on_one_base_model_are_seeded_and_independent(tiny_model_dir):
    """`add_student`: A from the given seed whatever ran before, B = 0; only the active student
    computes and trains; changing one student leaves another's outputs alone."""
    torch.manual_seed(0)
    shared = Policy(tiny_model_dir, lora=LoraSettings(rank=4, alpha=8), device="cpu", dtype="float32")
    first = shared.add_student("run0", seed=7)
    torch.rand(100)  # whatever else draws from torch's generator in between
    second = shared.add_student("run1", seed=7)
    other = shared.add_student("run2", seed=8)
    for a, b in zip(first.adapter_state().values(), second.adapter_state().values()):
        assert torch.equal(a, b)
    assert any(not torch.equal(a, c) for a, c in zip(first.adapter_state().values(), other.adapter_state().values()))
    assert all(not v.any() for k, v in first.adapter_state().items() if "lora_B" in k)
    ids = [5, 9, 14, 3]
    with shared.base_weights() as model:
        base = _logits(model, ids)
    with torch.no_grad():
        for p in first.trainable_parameters():
            p.add_(0.05 * torch.randn_like(p))
    second.activate()
    assert torch.equal(_logits(shared.model, ids), base)  # B = 0: the base weights, exactly
    trainable = {n for n, p in shared.model.named_parameters() if p.requires_grad}
    assert trainable and all(".run1." in n for n in trainable)
    first.activate()
    assert not torch.equal(_logits(shared.model, ids), base)
    with pytest.raises(ValueError, match="already has"):
        shared.add_student("run0", seed=1)
    first.remove_student()
    assert "run0" not in shared.model.peft_config

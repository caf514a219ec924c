"""vLLM and Hugging Face + PEFT agree on log-probs (float32, <= 1e-4), for base and updated adapters.

The HF side is computed here directly with transformers + peft (one forward over prompt+response),
and cross-checked with `ttsd.engine.scorer.score_tokens`. Convention (see ttsd/engine/vllm_sampler.py):
a sampled token's log-prob is taken under the distribution it was drawn from, after temperature
(and after top-p truncation, renormalised); prompt log-probs are at T = 1.
"""

from __future__ import annotations

import pytest

from tests.conftest import require_vllm
from ttsd.engine.types import SamplingSettings

require_vllm()  # a missing vLLM fails these tests: CI installs it

TOL = 1e-4
PROMPT = [1, 14, 15, 92, 65, 35, 89, 79, 32, 38, 46, 26, 43, 38, 3]


@pytest.fixture(scope="module")
def sampler(tiny_model_dir):
    from ttsd.engine.vllm_sampler import VLLMSampler

    engine = VLLMSampler(tiny_model_dir, dtype="float32", max_model_len=512, seed=0)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def peft_model(tiny_model_dir):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = get_peft_model(
        base, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", lora_dropout=0.0)
    )
    model.eval()
    return model


def _set_lora_b(peft_model, seed: int, scale: float = 0.5) -> None:
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * scale)


def _top_p_filter(scaled, top_p: float):
    """vLLM's nucleus rule: drop the low tail whose cumulative mass is <= 1 - top_p."""
    import torch

    if top_p >= 1.0:
        return scaled
    sorted_logits, order = scaled.sort(dim=-1, descending=False)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    drop = cumulative <= 1 - top_p
    drop[..., -1] = False
    sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    return torch.empty_like(scaled).scatter_(-1, order, sorted_logits)


def hf_logprobs(model, prompt, response, temperature=1.0, top_p=1.0, adapter=True) -> list[float]:
    """log p(response_t | prompt, response_<t) under HF (+ the peft adapter when adapter=True)."""
    import contextlib

    import torch

    ids = torch.tensor([list(prompt) + list(response)])
    context = contextlib.nullcontext() if adapter else model.disable_adapter()
    with torch.no_grad(), context:
        logits = model(input_ids=ids).logits[0].float()
    steps = logits[len(prompt) - 1 : len(prompt) + len(response) - 1] / temperature
    logp = torch.log_softmax(_top_p_filter(steps, top_p), dim=-1)
    return logp.gather(1, torch.tensor(response)[:, None]).squeeze(1).tolist()


def _max_gap(a, b) -> float:
    assert len(a) == len(b)
    return max(abs(x - y) for x, y in zip(a, b))


SETTINGS = [(1.0, 1.0), (0.7, 1.0), (1.3, 0.9)]


def _check_agreement(sampler, peft_model, adapter: bool, seed: int) -> list[float]:
    """Sample with vLLM in each setting; HF must give the same log-probs to the same tokens."""
    for temperature, top_p in SETTINGS:
        settings = SamplingSettings(temperature=temperature, top_p=top_p, max_tokens=24, seed=seed)
        samples = sampler.sample([PROMPT], n=2, settings=settings)[0]
        for sample in samples:
            expected = hf_logprobs(peft_model, PROMPT, sample.token_ids, temperature, top_p, adapter)
            assert _max_gap(sample.logprobs, expected) <= TOL, (temperature, top_p)
    response = samples[0].token_ids
    vllm_prompt_scores = sampler.score_prompt_logprobs(PROMPT, response)
    hf_scores = hf_logprobs(peft_model, PROMPT, response, adapter=adapter)
    assert _max_gap(vllm_prompt_scores, hf_scores) <= TOL
    return hf_scores


def test_base_weights_agree(sampler, peft_model):
    sampler.load_adapter(None)
    _check_agreement(sampler, peft_model, adapter=False, seed=1)


def test_adapter_written_fast_agrees(sampler, peft_model):
    _set_lora_b(peft_model, seed=1)
    sampler.sync_adapter(peft_model)
    before = sampler.one_adapter_fast_path_calls()
    _check_agreement(sampler, peft_model, adapter=True, seed=2)
    # on CPU the engine's dense one-adapter LoRA path computed these log-probs
    assert sampler.one_adapter_fast_path_calls() > before


def test_updated_adapter_saved_by_peft_agrees(sampler, peft_model, tmp_path):
    """Two updates in a row through PEFT's own save_pretrained: the engine follows each one."""
    response = list(range(60, 90))
    _set_lora_b(peft_model, seed=2)
    peft_model.save_pretrained(tmp_path / "step1")
    sampler.load_adapter(tmp_path / "step1")
    first = sampler.score_prompt_logprobs(PROMPT, response)
    assert _max_gap(first, hf_logprobs(peft_model, PROMPT, response)) <= TOL

    _set_lora_b(peft_model, seed=3)
    peft_model.save_pretrained(tmp_path / "step2")
    sampler.load_adapter(tmp_path / "step2")
    second = sampler.score_prompt_logprobs(PROMPT, response)
    assert _max_gap(second, hf_logprobs(peft_model, PROMPT, response)) <= TOL
    # The update is visible: otherwise agreement above could hide stale weights.
    assert _max_gap(first, second) > 1e-2
    _check_agreement(sampler, peft_model, adapter=True, seed=3)


def test_project_scorer_agrees_with_vllm(sampler, peft_model):
    from ttsd.engine import scorer
    _set_lora_b(peft_model, seed=4)
    sampler.sync_adapter(peft_model)
    samples = sampler.sample([PROMPT], n=3, settings=SamplingSettings(temperature=0.8, max_tokens=20, seed=4))[0]
    scores = scorer.score_tokens(
        peft_model,
        [PROMPT] * len(samples),
        [s.token_ids for s in samples],
        temperature=0.8,
        top_k=0,
    )
    for row, sample in enumerate(samples):
        n = len(sample.token_ids)
        assert _max_gap(scores.response_logprobs[row, :n].tolist(), sample.logprobs) <= TOL

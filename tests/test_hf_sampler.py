"""The Hugging Face sampler: determinism, log-probs shared with the scorer, adapters; then SmolLM2."""

from __future__ import annotations

import json
import re

import pytest
import torch

from tests.conftest import REPO
from ttsd.engine.chat import chat_prompt_ids
from ttsd.engine.policy import LoraSettings, Policy
from ttsd.engine.samplers import make_sampler, pick_backend
from ttsd.engine.scorer import score_tokens
from ttsd.engine.types import SamplingSettings


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    torch.manual_seed(0)
    return Policy(tiny_model_dir, lora=LoraSettings(rank=4, alpha=8), device="cpu", dtype="float32")


def _prompts(tokenizer):
    return [
        chat_prompt_ids(tokenizer, [{"role": "user", "content": "Write a correct Python program."}]),
        chat_prompt_ids(tokenizer, [{"role": "user", "content": "def solve"}]),
    ]


def _perturb(policy, scale=0.2, seed=3):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in policy.trainable_parameters():
            p.copy_(scale * torch.randn(p.shape, generator=generator))


def _tokens(results):
    return [[s.token_ids for s in row] for row in results]


def _assert_logprobs_match_scorer(model, prompts, results, temperature, atol):
    flat_prompts = [prompts[i] for i, row in enumerate(results) for _ in row]
    samples = [s for row in results for s in row]
    scores = score_tokens(model, flat_prompts, [s.token_ids for s in samples], temperature=temperature, top_k=0)
    for i, sample in enumerate(samples):
        assert len(sample.logprobs) == len(sample.token_ids)
        got = torch.tensor(sample.logprobs)
        torch.testing.assert_close(scores.response_logprobs[i, : len(got)], got, atol=atol, rtol=0)


def test_same_seed_same_samples_and_shapes(policy):
    sampler = policy.sampler()
    prompts = _prompts(policy.tokenizer)
    first = sampler.sample(prompts, n=3, settings=SamplingSettings(temperature=1.0, max_tokens=12, seed=7))
    again = sampler.sample(prompts, n=3, settings=SamplingSettings(temperature=1.0, max_tokens=12, seed=7))
    other = sampler.sample(prompts, n=3, settings=SamplingSettings(temperature=1.0, max_tokens=12, seed=8))
    assert [len(row) for row in first] == [3, 3]
    assert _tokens(first) == _tokens(again)
    assert _tokens(first) != _tokens(other)
    for sample in (s for row in first for s in row):
        if sample.finish_reason == "length":
            assert len(sample.token_ids) == 12
        else:
            assert sample.token_ids[-1] in sampler.eos_ids and len(sample.token_ids) <= 12
        assert sample.text == policy.tokenizer.decode(sample.token_ids, skip_special_tokens=True)


def test_stop_reason_and_eos_kept(policy):
    sampler = policy.sampler()
    results = sampler.sample(_prompts(policy.tokenizer), n=8, settings=SamplingSettings(temperature=1.0, max_tokens=60, seed=0))
    reasons = {s.finish_reason for row in results for s in row}
    assert reasons == {"stop", "length"}  # the random model sometimes stops within 60 tokens
    for sample in (s for row in results for s in row):
        stopped_at = [i for i, t in enumerate(sample.token_ids) if t in sampler.eos_ids]
        assert stopped_at == ([len(sample.token_ids) - 1] if sample.finish_reason == "stop" else [])


@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.7, 1.0), (1.3, 0.8), (0.0, 1.0)])
def test_logprobs_equal_scorer(policy, temperature, top_p):
    _perturb(policy)
    prompts = _prompts(policy.tokenizer)
    results = policy.sampler().sample(prompts, n=3, settings=SamplingSettings(temperature=temperature, top_p=top_p, max_tokens=16, seed=1))
    # the convention: log_softmax(z / T) before top-p (T = 1 for greedy)
    _assert_logprobs_match_scorer(policy, prompts, results, temperature or 1.0, atol=1e-5)
    if temperature == 0.0:
        rows = _tokens(results)
        assert all(row[0] == r for row in rows for r in row)  # greedy: all n identical


def test_a_checkpoints_sampling_defaults_do_not_reshape_the_distribution(policy):
    """Qwen2.5-Instruct's generation_config.json sets repetition_penalty 1.05: `generate` would apply it
    before the recorder, and the recorded log-probs would no longer be log_softmax(z / T)."""
    _perturb(policy)
    generation_config = policy.model.get_base_model().generation_config
    generation_config.repetition_penalty = 1.3
    try:
        prompts = _prompts(policy.tokenizer)
        results = policy.sampler(decode="generate").sample(prompts, n=2, settings=SamplingSettings(max_tokens=24, seed=2))
        _assert_logprobs_match_scorer(policy, prompts, results, 1.0, atol=1e-5)
    finally:
        generation_config.repetition_penalty = None


def test_adapter_change_changes_samples_and_disk_adapter_matches_live(policy, tiny_model_dir, tmp_path):
    prompts = _prompts(policy.tokenizer)
    shared = policy.sampler()
    _perturb(policy, seed=3)
    before = shared.sample(prompts, n=2, settings=SamplingSettings(max_tokens=16, seed=5))
    saved = policy.save_adapter(tmp_path / "a1")
    _perturb(policy, seed=4)
    after = shared.sample(prompts, n=2, settings=SamplingSettings(max_tokens=16, seed=5))
    assert _tokens(before) != _tokens(after)  # zero-copy: the live adapter is what is sampled

    own = make_sampler("hf", tiny_model_dir, device="cpu", dtype="float32")
    assert own.backend == "hf"
    own.load_adapter(saved)
    assert _tokens(own.sample(prompts, n=2, settings=SamplingSettings(max_tokens=16, seed=5))) == _tokens(before)
    own.load_adapter(policy.save_adapter(tmp_path / "a2"))
    assert _tokens(own.sample(prompts, n=2, settings=SamplingSettings(max_tokens=16, seed=5))) == _tokens(after)
    assert len(own._peft.peft_config) == 1  # the replaced adapter was dropped

    own.load_adapter(None)
    shared.load_adapter(None)
    base_own = own.sample(prompts, n=2, settings=SamplingSettings(max_tokens=16, seed=5))
    assert _tokens(base_own) == _tokens(shared.sample(prompts, n=2, settings=SamplingSettings(max_tokens=16, seed=5)))
    with policy.base_weights():
        _assert_logprobs_match_scorer(policy, prompts, base_own, 1.0, atol=1e-5)
    # shared mode: an adapter from disk goes into its own slot; the trainer's weights stay untouched
    live = policy.adapter_state()
    shared.load_adapter(saved)
    assert _tokens(shared.sample(prompts, n=2, settings=SamplingSettings(max_tokens=16, seed=5))) == _tokens(before)
    assert all(torch.equal(live[k], v.detach()) for k, v in policy.adapter_parameters().items())
    assert policy.model.active_adapter == "default"
    assert all(p.requires_grad for p in policy.trainable_parameters())
    shared.use_policy_adapter()
    assert _tokens(shared.sample(prompts, n=2, settings=SamplingSettings(max_tokens=16, seed=5))) == _tokens(after)


def test_backend_choice():
    assert pick_backend("hf") == "hf"
    assert pick_backend("auto") in ("hf", "vllm")


# ----- the real model ------------------------------------------------------------------------------
CODE_BLOCK = re.compile(r"```(?:python|py|Python)?\s*\n.*?(```|$)", re.S)


@pytest.mark.slow
def test_smollm2_writes_code_and_follows_its_adapter(tmp_path):
    from ttsd.engine.models import DEFAULT_MODEL, resolve_model

    problem = json.loads((REPO / "problems" / "examples" / "sum-two-numbers.json").read_text())
    policy = Policy(resolve_model(DEFAULT_MODEL), lora=LoraSettings(rank=8, alpha=16), device="cpu", dtype="float32")
    messages = [
        {
            "role": "user",
            "content": problem["statement"]
            + "\n\nWrite a Python program that reads the input from standard input and prints the answer. "
            "Put the program in a ```python code block.",
        }
    ]
    prompt = chat_prompt_ids(policy.tokenizer, messages)
    sampler = policy.sampler()
    base = sampler.sample([prompt], n=8, settings=SamplingSettings(temperature=1.0, max_tokens=96, seed=0))[0]
    assert len(base) == 8
    assert any(CODE_BLOCK.search(s.text) for s in base), [s.text for s in base]
    _assert_logprobs_match_scorer(policy, [prompt], [base], 1.0, atol=1e-4)

    _perturb(policy, scale=0.02, seed=11)
    updated = sampler.sample([prompt], n=8, settings=SamplingSettings(temperature=1.0, max_tokens=24, seed=0))[0]
    assert [s.token_ids[:24] for s in updated] != [s.token_ids[:24] for s in base]
    _assert_logprobs_match_scorer(policy, [prompt], [updated], 1.0, atol=1e-4)


@pytest.mark.parametrize("decode", ["generate", "static"])
def test_a_prompts_samples_do_not_depend_on_who_shares_its_batch(policy, decode):
    """What the scheduler relies on: sample j of a prompt draws from its own seeded stream, so the
    same prompt and seed give the same tokens alone, batched with other (longer, shorter) prompts,
    or split over several calls."""
    from ttsd.engine.types import SamplingSettings

    _perturb(policy, seed=3)
    sampler = policy.sampler(decode=decode)
    prompts = _prompts(policy.tokenizer)
    longer = chat_prompt_ids(policy.tokenizer, [{"role": "user", "content": "Read n numbers and print their sum, please."}])
    settings = SamplingSettings(temperature=1.0, max_tokens=16)
    alone = sampler.sample([prompts[1]], n=3, settings=settings, seeds=[11])[0]
    batched = sampler.sample([longer, prompts[1], prompts[0]], n=3, settings=settings, seeds=[5, 11, 11])
    assert _tokens([alone]) == _tokens([batched[1]])
    torch.testing.assert_close(torch.tensor([s.logprobs for s in alone]), torch.tensor([s.logprobs for s in batched[1]]))
    # one call of n = 3 is three calls of n = 1 with consecutive seeds, and a settings seed is seed + i * n
    singles = [sampler.sample([prompts[1]], n=1, settings=settings, seeds=[11 + j])[0][0] for j in range(3)]
    assert [s.token_ids for s in singles] == [s.token_ids for s in alone]
    seeded = settings.model_copy(update={"seed": 8})
    assert _tokens(sampler.sample([longer, prompts[1]], n=3, settings=seeded))[1] == _tokens([alone])[0]
    # rows in different chunks of max_batch_size draw what they draw in one chunk
    sampler.max_batch_size = 2
    assert _tokens(sampler.sample([longer, prompts[1], prompts[0]], n=3, settings=settings, seeds=[5, 11, 11])) == _tokens(batched)
    # different seeds do give different samples (the test above can fail)
    assert _tokens(sampler.sample([prompts[1]], n=3, settings=settings, seeds=[12])) != _tokens([alone])


def test_one_call_mixes_the_adapters_of_several_students(tiny_model_dir):
    """`sample(adapters=)`: each prompt's rows compute with its own student's adapter (PEFT's mixed
    batches), drawing what that student draws served alone; None is the base weights."""
    from ttsd.engine.types import SamplingSettings

    torch.manual_seed(0)
    shared = Policy(tiny_model_dir, lora=LoraSettings(rank=4, alpha=8), device="cpu", dtype="float32")
    students = [shared.add_student(f"run{i}", seed=i) for i in range(2)]
    for i, student in enumerate(students):
        student.activate()
        _perturb(student, scale=0.3, seed=10 + i)
    sampler = shared.sampler(decode="generate")
    assert sampler.can_mix_adapters() and not shared.sampler(decode="static").can_mix_adapters()
    prompt = _prompts(shared.tokenizer)[1]
    settings = SamplingSettings(temperature=1.0, max_tokens=16)
    mixed = sampler.sample([prompt] * 3, n=2, settings=settings, seeds=[4, 4, 4], adapters=["run0", None, "run1"])
    alone = []
    for adapter in ("run0", None, "run1"):
        if adapter is None:
            sampler.load_adapter(None)
        else:
            sampler.use_policy_adapter(adapter)
        alone.append(sampler.sample([prompt], n=2, settings=settings, seeds=[4])[0])
    assert _tokens(mixed) == _tokens(alone)
    for got, want in zip(mixed, alone):
        torch.testing.assert_close(torch.tensor([s.logprobs for s in got]), torch.tensor([s.logprobs for s in want]))
    assert len({tuple(map(tuple, row)) for row in _tokens(alone)}) == 3  # the adapters do differ (the test can fail)
    with pytest.raises(ValueError, match="one adapter per call"):
        shared.sampler(decode="static").sample([prompt], n=1, settings=settings, seeds=[0], adapters=["run0"])

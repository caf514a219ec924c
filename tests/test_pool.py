"""The best-of-k pool (ttsd.pool) on the tiny random model: i.i.d. attempts with per-attempt seeds,
resumed after a kill to the same attempts as an uninterrupted pool, never counting one twice."""

from __future__ import annotations

import json

import pytest

from ttsd.config import SolveConfig
from ttsd.methods.run_loop import step_seed
from ttsd.pool import POOL_ATTEMPTS, POOL_SUMMARY, SEED_BASE, default_pool_size, pool_attempts, pool_seed, read_pool, run_pool
from ttsd.problems import load_problem


@pytest.fixture(scope="module")
def problem(examples_dir):
    return load_problem(examples_dir / "sum-two-numbers.json")


def _config(tiny_model_dir) -> SolveConfig:
    return SolveConfig(model=str(tiny_model_dir), backend="hf", max_tokens=12, judge_workers=2, budget=2)


def test_pool_seeds_are_per_problem_and_apart_from_every_run_seed():
    seeds = {pool_seed(f"p{i}") for i in range(200)}
    assert len(seeds) == 200 and pool_seed("p0") == pool_seed("p0")
    assert all(SEED_BASE <= s < SEED_BASE + 2**29 for s in seeds)
    # the largest step seed of runs with seeds < 1000 and < 1000 steps, plus a batch's children, stays below
    assert max(step_seed(seed, step) for seed in (0, 999) for step in (0, 999)) + 1024 < SEED_BASE
    assert default_pool_size(64) == 256


def test_a_resumed_pool_draws_what_an_uninterrupted_pool_draws(tiny_model_dir, problem, tmp_path):
    config = _config(tiny_model_dir)
    whole = run_pool(problem, config, tmp_path / "whole", target=6, batch=2)
    assert whole.finished and whole.samples == 6 and whole.batch == 2 and whole.seed == pool_seed(problem.id)
    reference = pool_attempts(tmp_path / "whole")
    assert [a.k for a in reference] == [1, 2, 3, 4, 5, 6] and [a.step for a in reference] == [0, 0, 1, 1, 2, 2]
    assert len({a.response for a in reference}) > 1  # i.i.d. draws, not one stream repeated
    assert whole.passes == sum(a.verdict == "accepted" for a in reference)
    assert whole.sampled_tokens == sum(a.num_tokens for a in reference) > 0
    assert all(a.cost is not None and a.cost.sampled_tokens == a.num_tokens and a.cost.prompt_tokens > 0 for a in reference)
    assert whole.wall_s == pytest.approx(sum(a.cost.wall_s for a in reference))

    # A pool killed in its third batch: two batches counted, then the batch in flight got one
    # attempt into attempts.jsonl and a line cut half-way before pool.json could count it.
    partial = tmp_path / "partial"
    first = run_pool(problem, config, partial, target=4, batch=2)
    assert (first.samples, first.finished) == (4, True)
    with (partial / POOL_ATTEMPTS).open("a") as handle:
        handle.write(reference[4].model_dump_json() + "\n" + reference[5].model_dump_json()[:40])
    assert read_pool(partial).samples == 4 and len(pool_attempts(partial)) == 4
    seen = []
    resumed = run_pool(problem, config, partial, target=6, on_batch=seen.append)  # the batch it recorded
    assert [s.samples for s in seen] == [6] and resumed.finished and resumed.batch == 2
    lines = [json.loads(line) for line in (partial / POOL_ATTEMPTS).read_text().splitlines()]
    assert [a["k"] for a in lines] == [1, 2, 3, 4, 5, 6]  # the lost batch was redrawn, not added
    assert [a["response"] for a in lines] == [a.response for a in reference]
    assert json.loads((partial / POOL_SUMMARY).read_text())["samples"] == 6

    # a pool at its target draws nothing more (no model is loaded): a smaller target never cuts it
    again = run_pool(problem, config.model_copy(update={"model": str(tmp_path / "no-model")}), partial, target=4)
    assert again.samples == 6 and again.finished


def test_a_vllm_pool_batches_to_the_engine_and_its_attempts_do_not_depend_on_the_batching(tiny_model_dir, problem, tmp_path):
    config = _config(tiny_model_dir).model_copy(update={"backend": "vllm"})
    derived = run_pool(problem, config, tmp_path / "derived", target=3)  # the batch the engine holds at once
    assert derived.batch >= 3 and derived.samples == 3
    pieces = run_pool(problem, config, tmp_path / "pieces", target=3, batch=2)
    # vLLM seeds each attempt (base + its index), so one call of 3 and calls of 2 + 1 draw the same
    assert [a.response for a in pool_attempts(tmp_path / "pieces")] == [a.response for a in pool_attempts(tmp_path / "derived")]
    assert [a.step for a in pool_attempts(tmp_path / "pieces")] == [0, 0, 1]

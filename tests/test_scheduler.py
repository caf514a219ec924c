"""The scheduler: runs sharing one engine get the same attempts, verdicts and (float32) updates as
runs alone; a failing run fails alone; an interrupted concurrent bench resumes exactly per run."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.conftest import REPO
from ttsd.config import SolveConfig
from ttsd.methods import resolve_hardware, solve
from ttsd.methods.scheduler import RunJob, Scheduler, SharedEngine
from ttsd.problems import load_problem

PROBLEMS = ("reverse-string", "sum-two-numbers")
METHODS = ("sdpo", "best-of-k", "multi-turn")
OPTIONS = dict(backend="hf", budget=4, batch_size=2, max_tokens=16, learning_rate=1e-2, lora_rank=4, lora_alpha=8.0,
               judge_workers=2, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def problems():
    return {p: load_problem(REPO / "problems" / "examples" / f"{p}.json") for p in PROBLEMS}


def _config(tiny_model_dir, method: str, seed: int, **overrides) -> SolveConfig:
    return resolve_hardware(SolveConfig(model=str(tiny_model_dir), method=method, seed=seed, **{**OPTIONS, **overrides}))


def _keys():
    return [(p, m, s) for p in PROBLEMS for m in METHODS for s in (1,)]


def _record(run_dir):
    """What must not depend on who shared the engine: every attempt and every step's learning."""
    attempts = [json.loads(line) for line in (run_dir / "attempts.jsonl").read_text().splitlines()]
    steps = [json.loads(line) for line in (run_dir / "steps.jsonl").read_text().splitlines()]
    return (
        [(a["k"], a["step"], a["response"], a["verdict"], a["tests_passed"], a["num_tokens"]) for a in attempts],
        [(s["step"], s["verdicts"], s["loss"], s["grad_norm"], s["mean_reverse_kl"]) for s in steps],
    )


def _jobs(tiny_model_dir, problems, root, resume=False):
    return [
        RunJob((p, m, s), problems[p], _config(tiny_model_dir, m, s), root / p / m / f"seed-{s}", resume=resume)
        for p, m, s in _keys()
    ]


def _shared_engine(tiny_model_dir) -> SharedEngine:
    config = _config(tiny_model_dir, "sdpo", 0)
    return SharedEngine(config, tiny_model_dir, learns=True)


@pytest.fixture(scope="module")
def alone(tiny_model_dir, problems, tmp_path_factory):
    """Every run by itself (`solve`: its own engine, R = 1)."""
    root = tmp_path_factory.mktemp("alone")
    for p, m, s in _keys():
        solve(problems[p], _config(tiny_model_dir, m, s), root / p / m / f"seed-{s}")
    return root


def test_runs_sharing_one_engine_get_what_they_get_alone(tiny_model_dir, problems, alone, tmp_path):
    engine = _shared_engine(tiny_model_dir)
    # a run that cannot start (its attempts do not fit its max_model_len) fails alone
    broken = RunJob(("broken",), problems["sum-two-numbers"], _config(tiny_model_dir, "best-of-k", 9, max_model_len=256, max_tokens=300),
                    tmp_path / "broken")
    # a run that crashes mid-run, after its first sampling (its pytest file cannot be collected
    # when the judge first needs it) fails alone too
    folder = tmp_path / "uncollectable"
    shutil.copytree(REPO / "problems" / "examples" / "count-vowels", folder)
    (folder / "test_visible.py").write_text('raise RuntimeError("no collecting this")\n\n\ndef test_never():\n    pass\n')
    crashing = RunJob(("crashing",), load_problem(folder), _config(tiny_model_dir, "sdpo", 3), tmp_path / "crashing")
    updates = []
    scheduler = Scheduler(engine, concurrent=4, on_update=lambda key, state, summary: updates.append((key, state)), run_logs=True)
    try:
        results = scheduler.run([broken, crashing, *_jobs(tiny_model_dir, problems, tmp_path / "together")])
    finally:
        engine.close()
    by_key = {r.key: r for r in results}
    assert "max_model_len 256 cannot hold" in by_key[("broken",)].message
    assert "run failed" in (tmp_path / "broken" / "run.log").read_text()
    assert "PytestCollectionError" in by_key[("crashing",)].message
    assert (("crashing",), "failed") in updates and "run failed" in (tmp_path / "crashing" / "run.log").read_text()
    assert (tmp_path / "crashing" / "config.json").exists() and not (tmp_path / "crashing" / "steps.jsonl").read_text()
    for key in _keys():
        assert by_key[key].error is None, by_key[key].message
        p, m, s = key
        assert _record(tmp_path / "together" / p / m / f"seed-{s}") == _record(alone / p / m / f"seed-{s}"), key
        assert (key, "done") in updates
    # the batching was real: four runs' requests went to the sampler in one call
    assert max(scheduler.batch_sizes) == 4
    # sdpo learned (the comparison above covers updates, not just sampling; the last batch learns nothing)
    sdpo = _record(tmp_path / "together" / "sum-two-numbers" / "sdpo" / "seed-1")[1]
    assert sdpo[0][2] is not None and sdpo[0][3] > 0


def test_an_interrupted_concurrent_bench_resumes_exactly_per_run(tiny_model_dir, problems, alone, tmp_path):
    root = tmp_path / "bench"
    steps_seen = []

    def stop_after_three_steps(record, summary):
        steps_seen.append(summary.problem_id)
        if len(steps_seen) == 3:
            raise KeyboardInterrupt  # like a kill: not a run's failure, the whole process stops

    jobs = _jobs(tiny_model_dir, problems, root)
    for job in jobs:
        job.progress = stop_after_three_steps
    engine = _shared_engine(tiny_model_dir)
    with pytest.raises(KeyboardInterrupt):
        try:
            Scheduler(engine, concurrent=3).run(jobs)
        finally:
            engine.close()
    started = [job for job in jobs if (job.run_dir / "config.json").exists()]
    assert started and not all((job.run_dir / "summary.json").exists() and json.loads((job.run_dir / "summary.json").read_text())["finished"] for job in started)
    engine = _shared_engine(tiny_model_dir)
    try:
        resumed = _jobs(tiny_model_dir, problems, root)
        for job in resumed:
            job.resume = (job.run_dir / "config.json").exists()
        results = Scheduler(engine, concurrent=4).run(resumed)
    finally:
        engine.close()
    assert all(r.error is None for r in results), [r.message for r in results if r.error]
    for p, m, s in _keys():
        assert _record(root / p / m / f"seed-{s}") == _record(alone / p / m / f"seed-{s}"), (p, m, s)

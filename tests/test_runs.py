"""Run directories: records round-trip, a crash-cut line and an incomplete step are rolled back."""

from __future__ import annotations

import pytest

from ttsd.config import SolveConfig
from ttsd.problems import load_problem
from ttsd.runs import AttemptRecord, RunDir, StepRecord, Summary, attempt_costs, split_evenly
from tests.conftest import REPO


def _attempt(k, step):
    return AttemptRecord(k=k, step=step, response=f"r{k}", code=None, verdict="wrong_answer", tests_passed=0,
                         tests_total=3, feedback="f", num_tokens=4, finish_reason="stop")


def test_create_refuses_an_existing_run_and_rollback_drops_incomplete_step(tmp_path):
    problem = load_problem(REPO / "problems" / "examples" / "sum-two-numbers.json")
    run = RunDir.create(tmp_path / "run", SolveConfig(), problem, model_path="m")
    with pytest.raises(FileExistsError):
        RunDir.create(tmp_path / "run", SolveConfig(), problem)
    run.append_attempts([_attempt(1, 0), _attempt(2, 0)])
    run.append_step(StepRecord(step=0, attempts=2, loss=0.5))
    run.append_attempts([_attempt(3, 1)])  # step 1 never completed
    with run.attempts_path.open("a") as handle:
        handle.write('{"k": 4, "step"')  # a line cut by SIGKILL
    attempts, steps = RunDir.open(tmp_path / "run").rollback_to_completed_steps()
    assert [a.k for a in attempts] == [1, 2] and [s.step for s in steps] == [0]
    assert [a.k for a in run.attempts()] == [1, 2]
    assert run.problem().id == problem.id and run.config_data()["config"]["budget"] == SolveConfig().budget


def test_summary_round_trip_and_finished_flag(tmp_path):
    run = RunDir(tmp_path)
    assert run.summary() is None and not run.is_finished()
    summary = Summary(problem_id="p", method="sdpo", seed=0, discovered=True, discovery_k=3, attempts_used=4,
                      budget=8, wall_s=1.0)
    run.write_summary(summary)
    assert run.summary() == summary and run.is_finished()


def test_open_rejects_a_non_run(tmp_path):
    with pytest.raises(FileNotFoundError):
        RunDir.open(tmp_path)


OLD_NAMES_RUNS = REPO / "results" / "study-smollm2-very-hard" / "bench" / "runs"  # written before the renames


def test_run_folders_with_the_old_names_load_with_the_same_values():
    """steps.jsonl lines with mean_kl, logprob_gap and extra.teacher_student_gap read as
    mean_reverse_kl, stale_weights_gap and extra.ema_weight_distance; verdict strings as Verdicts."""
    import json

    from ttsd.judge import Verdict

    run_dirs = sorted(path.parent for path in OLD_NAMES_RUNS.glob("*/*/seed-*/steps.jsonl"))
    assert len(run_dirs) == 18
    ema_distances = 0
    for run_dir in run_dirs:
        run = RunDir.open(run_dir)
        raw_steps = [json.loads(line) for line in run.steps_path.read_text().splitlines() if line.strip()]
        steps = run.steps()
        assert len(steps) == len(raw_steps) > 0
        for raw, step in zip(raw_steps, steps):
            assert "mean_kl" in raw and "mean_reverse_kl" not in raw  # really the old names
            assert (step.mean_reverse_kl, step.stale_weights_gap) == (raw["mean_kl"], raw["logprob_gap"])
            assert step.time_sync_s == raw["time_sync_s"] and step.loss == raw["loss"]
            if "teacher_student_gap" in raw["extra"]:
                assert step.extra["ema_weight_distance"] == raw["extra"]["teacher_student_gap"]
                assert "teacher_student_gap" not in step.extra
                ema_distances += 1
            assert StepRecord.model_validate_json(step.model_dump_json()) == step  # written back under the new names
            assert "logprob_gap" not in json.loads(step.model_dump_json())
        raw_attempts = [json.loads(line) for line in run.attempts_path.read_text().splitlines() if line.strip()]
        attempts = run.attempts()
        assert [a.verdict for a in attempts] == [Verdict(r["verdict"]) for r in raw_attempts]
        assert [a.passed for a in attempts] == [r["verdict"] == "accepted" for r in raw_attempts]
    assert ema_distances > 0  # the sdpo runs kept the EMA teacher's distance


def test_a_steps_costs_are_shared_so_that_they_add_up_to_the_step():
    assert split_evenly(10, 4) == [3, 3, 2, 2] and split_evenly(3, 3) == [1, 1, 1] and split_evenly(0, 2) == [0, 0]
    with pytest.raises(ValueError):
        split_evenly(5, 0)
    costs = attempt_costs(3.0, sampled_tokens=[5, 7, 9], prompt_tokens=[40, 40, 41], scored_tokens=301, trained_tokens=100)
    assert [c.sampled_tokens for c in costs] == [5, 7, 9] and [c.prompt_tokens for c in costs] == [40, 40, 41]
    assert [c.scored_tokens for c in costs] == [101, 100, 100] and [c.trained_tokens for c in costs] == [34, 33, 33]
    assert [c.wall_s for c in costs] == [1.0, 1.0, 1.0]
    assert attempt_costs(1.0, [], []) == []
    # records from before costs were kept still load
    old = _attempt(1, 0).model_dump(mode="json")
    del old["cost"]
    assert AttemptRecord.model_validate(old).cost is None
    assert StepRecord.model_validate({"step": 0, "attempts": 2}).scored_tokens == 0

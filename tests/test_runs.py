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

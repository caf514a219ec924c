"""Calibration: the screening rule, resuming a stopped run, refusing other settings, the CLI."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from ttsd.calibration import (
    PROGRESS_FILE,
    CalibrationMismatch,
    CalibrationSettings,
    calibrate_pool,
    call_seed,
    is_decided,
    read_estimates,
    read_progress,
)
from ttsd.cli import app
from ttsd.problems import load_problem
from ttsd.splits import ProblemRate

PROBLEMS = ["reverse-string", "sum-two-numbers", "balanced-brackets"]


def settings_for(model, **fields) -> CalibrationSettings:
    data = dict(model=str(model), backend="hf", max_tokens=8, stages=[2, 4], problems_per_call=2)
    data.update(fields)
    return CalibrationSettings(**data)


def test_screening_rule_stops_only_problems_that_cannot_be_very_hard():
    settings = CalibrationSettings(model="m", backend="hf")  # 16 → 64, very_hard below 0.03
    assert settings.deciding_passes == 2  # 2/64 ≥ 0.03: two passes rule out very_hard
    assert not is_decided(0, 16, settings) and not is_decided(1, 16, settings)  # never vs rarely: undecided
    assert is_decided(2, 16, settings) and is_decided(16, 16, settings)
    assert is_decided(0, 64, settings) and is_decided(1, 64, settings)  # all samples drawn
    wider = CalibrationSettings(model="m", backend="hf", thresholds={"hard": 0.5, "very_hard": 0.1})
    assert wider.deciding_passes == 7 and not is_decided(6, 16, wider) and is_decided(7, 16, wider)
    with pytest.raises(ValueError, match="increasing"):
        CalibrationSettings(model="m", backend="hf", stages=[16, 16])


def test_a_stopped_calibration_resumes_without_redoing_finished_problems(tiny_model_dir, examples_dir, tmp_path):
    problems = [load_problem(examples_dir / f"{pid}.json") for pid in PROBLEMS]
    settings = settings_for(tiny_model_dir)
    whole = calibrate_pool(problems, settings, tmp_path / "whole")
    # a random model passes nothing: every problem stays undecided up to the last stage
    assert {pid: (r.samples, r.passed) for pid, r in whole.items()} == {pid: (4, 0) for pid in PROBLEMS}

    calls = []

    def stop_after_first_call(state) -> None:
        calls.append(state.problems_done_now)
        raise KeyboardInterrupt  # what Ctrl-C (or a kill between calls) leaves behind

    run_dir = tmp_path / "stopped"
    with pytest.raises(KeyboardInterrupt):
        calibrate_pool(problems, settings, run_dir, on_progress=stop_after_first_call)
    assert calls == [["balanced-brackets", "reverse-string"]]  # sorted ids, two per call
    assert set(read_progress(run_dir)) == {("balanced-brackets", 0), ("reverse-string", 0)}
    with open(run_dir / PROGRESS_FILE, "a") as handle:  # a kill in the middle of a write
        handle.write('{"problem_id": "sum-two-nu')
    calls.clear()
    resumed = calibrate_pool(problems, settings, run_dir, on_progress=lambda state: calls.append(state.problems_done_now))
    assert calls == [["sum-two-numbers"], ["balanced-brackets", "reverse-string"], ["sum-two-numbers"]]
    assert resumed == whole
    lines = [json.loads(line) for line in (run_dir / PROGRESS_FILE).read_text().splitlines() if line.endswith("}")]
    keys = [(line["problem_id"], line["stage"]) for line in lines]
    assert len(keys) == len(set(keys)) == 6  # nothing sampled twice
    same = {k: (r.samples, r.passed, r.truncated) for k, r in read_progress(tmp_path / "whole").items()}
    assert {k: (r.samples, r.passed, r.truncated) for k, r in read_progress(run_dir).items()} == same
    # once done, a rerun samples nothing
    calls.clear()
    assert calibrate_pool(problems, settings, run_dir, on_progress=lambda state: calls.append(state)) == whole and calls == []


def test_a_decided_problem_gets_no_more_samples(tiny_model_dir, examples_dir, tmp_path):
    problems = [load_problem(examples_dir / f"{pid}.json") for pid in PROBLEMS[:2]]
    settings = settings_for(tiny_model_dir, problems_per_call=1)
    with pytest.raises(KeyboardInterrupt):
        calibrate_pool(problems, settings, tmp_path, on_progress=lambda state: (_ for _ in ()).throw(KeyboardInterrupt))
    # as if reverse-string had passed once in its first stage: 1 of at most 4 rules out very_hard
    progress = tmp_path / PROGRESS_FILE
    record = json.loads(progress.read_text())
    assert record["problem_id"] == "reverse-string" and record["passed"] == 0
    progress.write_text(json.dumps(dict(record, passed=1)) + "\n")
    rates = calibrate_pool(problems, settings, tmp_path)
    assert (rates["reverse-string"].samples, rates["reverse-string"].passed) == (2, 1)  # stopped after screening
    assert (rates["sum-two-numbers"].samples, rates["sum-two-numbers"].passed) == (4, 0)


def test_selected_problems_get_fresh_samples_that_estimate_their_rate(tiny_model_dir, examples_dir, tmp_path):
    problems = [load_problem(examples_dir / f"{pid}.json") for pid in PROBLEMS[:2]]
    # very_hard below 0.3 of 4 samples: one pass in the first 2 leaves a problem undecided, 1 of 4 selects it
    screen_only = settings_for(tiny_model_dir, problems_per_call=1, thresholds={"hard": 0.5, "very_hard": 0.3})
    with pytest.raises(KeyboardInterrupt):
        calibrate_pool(problems, screen_only, tmp_path, on_progress=lambda state: (_ for _ in ()).throw(KeyboardInterrupt))
    progress = tmp_path / PROGRESS_FILE
    record = json.loads(progress.read_text())
    assert record["problem_id"] == "reverse-string"
    progress.write_text(json.dumps(dict(record, passed=1)) + "\n")  # as if one of its first two samples passed
    rates = calibrate_pool(problems, screen_only, tmp_path)
    assert rates["reverse-string"] == ProblemRate(samples=4, passed=1)  # selected: 0.25 < 0.3 with a pass
    assert read_estimates(tmp_path, screen_only) == {}

    # the same calibration with estimates (an old run directory may add them): only the selected
    # problem gets more samples, in a stage of its own whose seeds the screen never used
    settings = screen_only.model_copy(update={"estimate_samples": 3})
    calls = []
    again = calibrate_pool(problems, settings, tmp_path, on_progress=lambda state: calls.append((state.problems_done_now, state.stages)))
    assert again == rates and calls == [(["reverse-string"], 3)]  # the selection counts stay the selection's
    assert read_estimates(tmp_path, settings) == {"reverse-string": ProblemRate(samples=3, passed=0)}
    assert read_progress(tmp_path)[("reverse-string", settings.estimate_stage)].samples == 3
    screen_seeds = {call_seed(settings, stage, ["reverse-string"]) for stage in range(len(settings.stages))}
    assert call_seed(settings, settings.estimate_stage, ["reverse-string"]) not in screen_seeds
    with pytest.raises(CalibrationMismatch, match="estimate_samples: 3 → 5"):
        calibrate_pool(problems, settings.model_copy(update={"estimate_samples": 5}), tmp_path)


def test_unsolved_stop_caps_what_a_never_solved_problem_costs(tiny_model_dir, examples_dir, tmp_path):
    capped = CalibrationSettings(model="m", backend="hf", stages=[8, 64], unsolved_stop=8)
    assert is_decided(0, 8, capped) and not is_decided(1, 8, capped)  # one pass: rarely, go on to 64
    assert not is_decided(0, 8, CalibrationSettings(model="m", backend="hf", stages=[8, 64]))  # off by default
    # a call holds about problems_per_call x stages[0] sequences in every stage
    assert [capped.problems_per_call_at(stage) for stage in (0, 1)] == [4, 1]
    assert CalibrationSettings(model="m", backend="hf", stages=[8, 16], problems_per_call=8).problems_per_call_at(1) == 8
    problems = [load_problem(examples_dir / f"{pid}.json") for pid in PROBLEMS]
    rates = calibrate_pool(problems, settings_for(tiny_model_dir, unsolved_stop=2), tmp_path)
    # the random model passes nothing: every problem stops at 0/2 instead of going on to 4
    assert {pid: (r.samples, r.passed) for pid, r in rates.items()} == {pid: (2, 0) for pid in PROBLEMS}
    assert {stage for _, stage in read_progress(tmp_path)} == {0}


def test_other_settings_are_refused(tiny_model_dir, examples_dir, tmp_path):
    problems = [load_problem(examples_dir / "reverse-string.json")]
    calibrate_pool(problems, settings_for(tiny_model_dir, stages=[2]), tmp_path)
    with pytest.raises(CalibrationMismatch, match=r"max_tokens: 8 → 16"):
        calibrate_pool(problems, settings_for(tiny_model_dir, stages=[2], max_tokens=16), tmp_path)


def test_calibrate_cli_writes_prefixed_splits_and_resumes(tiny_model_dir, examples_dir, tmp_path):
    pool = tmp_path / "pool"
    pool.mkdir()
    for pid in PROBLEMS[:2]:
        (pool / f"{pid}.json").write_text((examples_dir / f"{pid}.json").read_text())
    (pool / ".ttsd-import").write_text(json.dumps({"importer": "humaneval", "arguments": []}))
    args = ["splits", "calibrate", str(pool), "--model", str(tiny_model_dir), "--samples", "4", "--screen", "2",
            "--max-tokens", "8", "--backend", "hf", "--out", str(tmp_path / "splits"), "--prefix", "pool-",
            "--run-dir", str(tmp_path / "run")]
    runner = CliRunner()
    result = runner.invoke(app, args, terminal_width=200)
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "splits" / "pool-hard.json").read_text())
    assert data["name"] == "pool-hard" and data["problem_ids"] == ["reverse-string", "sum-two-numbers"]
    assert data["rates"]["reverse-string"] == {"samples": 4, "passed": 0}
    assert data["calibration"]["stages"] == [2, 4] and data["sources"][0]["dir"] == "../pool"
    assert data["sources"][0]["import_command"].startswith("ttsd problems import humaneval --out ")
    very_hard = json.loads((tmp_path / "splits" / "pool-very_hard.json").read_text())
    assert very_hard["problem_ids"] == []  # never solved is not very hard
    assert "2 of 2 problems were never solved" in result.output
    again = runner.invoke(app, args, terminal_width=200)
    assert again.exit_code == 0 and len((tmp_path / "run" / PROGRESS_FILE).read_text().splitlines()) == 4
    changed = runner.invoke(app, [*args, "--temperature", "0.5"], terminal_width=200)
    assert changed.exit_code == 2 and "temperature: 1.0 → 0.5" in changed.output


def test_calibrate_cli_takes_solve_configs_options_and_defaults(examples_dir):
    """The run options of `splits calibrate` are SolveConfig's (same parsing, same defaults: the copies
    it once declared had drifted), the thresholds are ttsd.splits.THRESHOLDS."""
    import typer

    from ttsd.cli.splits import RUN_FIELDS, run_settings
    from ttsd.config import SolveConfig
    from ttsd.splits import THRESHOLDS

    calibrate = typer.main.get_command(app).commands["splits"].commands["calibrate"]

    def parse(*args: str) -> dict:
        return calibrate.make_context("calibrate", [str(examples_dir), *args]).params

    assert set(RUN_FIELDS) == {"model", "backend", "sandbox", "judge_workers", "temperature", "max_tokens", "seed"}
    defaults, params = SolveConfig(), parse()
    assert run_settings(params).model_dump(include=set(RUN_FIELDS)) == defaults.model_dump(include=set(RUN_FIELDS))
    assert {"hard": params["hard_below"], "very_hard": params["very_hard_below"]} == THRESHOLDS
    given = run_settings(parse("--judge-workers", "2", "--model", "m", "--max-tokens", "8"))
    assert (given.judge_workers, given.model, given.max_tokens, given.seed) == (2, "m", 8, defaults.seed)
    refused = CliRunner().invoke(app, ["splits", "calibrate", str(examples_dir), "--temperature", "0"])
    assert refused.exit_code == 2 and "--temperature" in refused.output  # SolveConfig's bound (> 0)


def test_calibrate_cli_bad_input(tmp_path, examples_dir):
    runner = CliRunner()
    missing = runner.invoke(app, ["splits", "calibrate", str(tmp_path / "missing")])
    assert missing.exit_code == 2 and "error" in missing.output
    screen = runner.invoke(app, ["splits", "calibrate", str(examples_dir), "--screen", "64", "--samples", "16"])
    assert screen.exit_code == 2 and "--screen sample counts must be positive, increasing" in screen.output
    twice = runner.invoke(app, ["splits", "calibrate", str(examples_dir), str(examples_dir)])
    assert twice.exit_code == 2 and "ids must be unique across the pool" in twice.output


def test_a_vllm_calibration_keeps_the_terminal_to_its_progress_and_logs_the_engine(tiny_model_dir, examples_dir, tmp_path):
    import re
    import subprocess
    import sys

    from tests.conftest import REPO

    vllm_info = re.compile(r"\) INFO \d\d-\d\d \d\d:\d\d:\d\d \[")  # "(MainProcess pid=1) INFO 12-01 03:18:18 [model.py:733]"
    pool = tmp_path / "pool"
    pool.mkdir()
    (pool / "reverse-string.json").write_text((examples_dir / "reverse-string.json").read_text())
    done = subprocess.run(
        [sys.executable, "-m", "ttsd", "splits", "calibrate", str(pool), "--model", str(tiny_model_dir), "--samples", "2",
         "--screen", "", "--max-tokens", "8", "--backend", "vllm", "--out", str(tmp_path / "splits"),
         "--run-dir", str(tmp_path / "run")],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    terminal = done.stdout + done.stderr
    log = (tmp_path / "run" / "calibration.log").read_text()
    assert vllm_info.search(log)  # what the engine said is kept, timestamped
    assert not vllm_info.search(terminal) and "1 of 1 problems were never solved" in terminal

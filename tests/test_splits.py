import json

import pytest
from typer.testing import CliRunner

from ttsd.cli import app
from ttsd.problems import load_problem
from ttsd.splits import (
    SPLITS_DIR,
    Calibration,
    ProblemRate,
    SplitFile,
    SplitNotFound,
    assign_splits,
    calibrate,
    find_split,
    make_split_files,
    save_split,
    split_problems,
)


def test_thresholds_follow_the_paper():
    rates = {
        "easy": ProblemRate(samples=64, passed=40),  # 0.625
        "half": ProblemRate(samples=64, passed=32),  # 0.5: not hard (strict <)
        "hard": ProblemRate(samples=64, passed=10),
        "two": ProblemRate(samples=64, passed=2),  # 0.031: hard, not very hard
        "one": ProblemRate(samples=64, passed=1),  # 0.016: very hard
        "none": ProblemRate(samples=64, passed=0),
    }
    splits = assign_splits(rates)
    assert splits["hard"] == ["hard", "none", "one", "two"]
    assert splits["very_hard"] == ["none", "one"]


def test_split_files_round_trip_and_lookup(tmp_path, examples_dir):
    rates = {"reverse-string": ProblemRate(samples=8, passed=0), "sum-two-numbers": ProblemRate(samples=8, passed=6)}
    calibration = Calibration(model="tiny", samples=8, note="test")
    files = make_split_files(rates, calibration, problems_dir=str(examples_dir))
    assert [f.name for f in files] == ["hard", "very_hard"]
    path = save_split(files[1], tmp_path)
    loaded, found_at = find_split(path)
    assert found_at == path and loaded.problem_ids == ["reverse-string"]
    assert loaded.calibration.thresholds == {"hard": 0.5, "very_hard": 0.03}
    assert loaded.rates["sum-two-numbers"].rate == 0.75 and loaded.measured
    assert [p.id for p in split_problems(loaded, path)] == ["reverse-string"]
    with pytest.raises(SplitNotFound, match="no split 'nonexistent'"):
        find_split("nonexistent")


def test_bundled_splits_are_well_formed():
    for name in ("hard", "very_hard"):
        split, path = find_split(name)
        assert path.parent == SPLITS_DIR
        assert split.calibration is not None and split.calibration.model == "smollm2-135m-instruct"
        # measured with the paper's 64 samples on every bundled problem, not assumed
        assert split.measured and split.calibration.samples == 64
        assert {r.samples for r in split.rates.values()} == {64}
        assert set(split.rates) == {p.stem for p in (SPLITS_DIR.parent / "examples").glob("*.json")}
        assert split.problem_ids == sorted(
            pid for pid, r in split.rates.items() if r.rate < split.calibration.thresholds[name]
        )
        assert len(split_problems(split, path)) == len(split.problem_ids)


def test_calibrate_samples_and_judges_every_problem(tiny_model_dir, examples_dir):
    problems = [load_problem(examples_dir / "reverse-string.json"), load_problem(examples_dir / "sum-two-numbers.json")]
    seen = []
    rates, calibration = calibrate(
        problems, str(tiny_model_dir), samples=3, backend="hf", max_tokens=8, batch_size=2,
        on_problem=lambda problem, rate: seen.append(problem.id),
    )
    assert seen == ["reverse-string", "sum-two-numbers"]
    assert {pid: r.samples for pid, r in rates.items()} == {"reverse-string": 3, "sum-two-numbers": 3}
    # a random model writes no program: every sample fails, so both problems are very hard for it
    assert all(r.passed == 0 for r in rates.values())
    assert calibration.backend == "hf" and calibration.samples == 3


def test_calibrate_cli_writes_split_files(tiny_model_dir, examples_dir, tmp_path):
    problems_dir = tmp_path / "problems"
    problems_dir.mkdir()
    (problems_dir / "reverse-string.json").write_text((examples_dir / "reverse-string.json").read_text())
    result = CliRunner().invoke(
        app,
        ["splits", "calibrate", str(problems_dir), "--model", str(tiny_model_dir), "--samples", "2",
         "--max-tokens", "8", "--backend", "hf", "--out", str(tmp_path / "splits")],
        terminal_width=200,
    )
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "splits" / "very_hard.json").read_text())
    assert data["problem_ids"] == ["reverse-string"]
    assert data["rates"]["reverse-string"] == {"samples": 2, "passed": 0}
    split = SplitFile.model_validate(data)
    assert [p.id for p in split_problems(split, tmp_path / "splits" / "very_hard.json")] == ["reverse-string"]


def test_calibrate_cli_bad_input(tmp_path):
    result = CliRunner().invoke(app, ["splits", "calibrate", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "error" in result.output

import json

import pytest

from ttsd.problems import load_problems
from ttsd.splits import (
    SPLITS_DIR,
    Calibration,
    ProblemRate,
    SplitNotFound,
    SplitProblemsMissing,
    SplitSource,
    assign_splits,
    find_split,
    in_split,
    make_split_files,
    save_split,
    split_problems,
)


def test_split_definitions():
    rates = {
        "easy": ProblemRate(samples=64, passed=40),  # 0.625
        "half": ProblemRate(samples=64, passed=32),  # 0.5: not hard (strict <)
        "hard": ProblemRate(samples=64, passed=10),
        "two": ProblemRate(samples=64, passed=2),  # 0.031: hard, not very hard
        "one": ProblemRate(samples=64, passed=1),  # 0.016: very hard
        "none": ProblemRate(samples=64, passed=0),  # never solved: hard, but not very hard
        "screened": ProblemRate(samples=16, passed=3),  # decided after 16 samples: 0.19
    }
    splits = assign_splits(rates)
    assert splits["hard"] == ["hard", "none", "one", "screened", "two"]
    assert splits["very_hard"] == ["one"]


def test_split_files_round_trip_and_lookup(tmp_path, examples_dir):
    rates = {"reverse-string": ProblemRate(samples=64, passed=1), "sum-two-numbers": ProblemRate(samples=8, passed=6)}
    calibration = Calibration(model="tiny", samples=64, note="test")
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


def test_split_files_keep_selection_and_estimation_counts_apart_and_old_files_load(tmp_path):
    rates = {"one": ProblemRate(samples=64, passed=1), "many": ProblemRate(samples=16, passed=9)}
    estimates = {"one": ProblemRate(samples=64, passed=0)}  # fresh samples: the selected problem's 1/64 was lucky
    calibration = Calibration(model="tiny", samples=64, estimate_samples=64)
    very_hard = make_split_files(rates, calibration, estimates=estimates)[1]
    assert very_hard.problem_ids == ["one"]  # membership from the selection counts
    loaded, _ = find_split(save_split(very_hard, tmp_path))
    assert loaded.rates["one"] == ProblemRate(samples=64, passed=1) and loaded.estimates == estimates
    assert loaded.estimated_rate("one").rate == 0.0 and loaded.estimated_rate("many").rate == 9 / 16
    # a split file from before estimates: no `estimates`, no `calibration.estimate_samples`
    data = json.loads((tmp_path / "very_hard.json").read_text())
    del data["estimates"], data["calibration"]["estimate_samples"]
    (tmp_path / "old.json").write_text(json.dumps(data))
    old, _ = find_split(tmp_path / "old.json")
    assert old.estimates == {} and old.calibration.estimate_samples == 0 and old.estimated_rate("one").passed == 1


def test_bundled_splits_are_well_formed():
    for name in ("hard", "very_hard"):
        split, path = find_split(name)
        assert path.parent == SPLITS_DIR
        assert split.calibration is not None and split.calibration.model == "smollm2-135m-instruct"
        # measured with the paper's 64 samples on every bundled problem, not assumed
        assert split.measured and split.calibration.samples == 64
        assert {r.samples for r in split.rates.values()} == {64}
        # every bundled problem, files and problem folders (count-vowels) alike, has a measured rate
        assert set(split.rates) == {p.id for p in load_problems(SPLITS_DIR.parent / "examples")}
        assert "count-vowels" in split.rates
        assert split.problem_ids == sorted(
            pid for pid, r in split.rates.items() if in_split(name, r, split.calibration.thresholds[name])
        )
        assert len(split_problems(split, path)) == len(split.problem_ids) > 0  # `ttsd bench --split very_hard` works


def test_committed_pool_splits_agree_with_their_rates():
    """The pool splits are committed without their problems: check what the files themselves claim."""
    for name in ("hard", "very_hard"):
        split, _ = find_split(f"pool-{name}")
        calibration = split.calibration
        assert calibration is not None and calibration.model == "smollm2-135m-instruct" and split.measured
        assert len(split.rates) == 561  # 164 HumanEval + 397 MBPP+
        assert split.problem_ids == sorted(pid for pid, r in split.rates.items() if in_split(name, r, calibration.thresholds[name]))
        # the cost cap: a problem stopped unsolved has exactly unsolved_stop samples; others all 64
        assert calibration.unsolved_stop == 8 and calibration.stages == [8, 64]
        for rate in split.rates.values():
            assert rate.samples == 64 or (rate.samples == 8 and (rate.passed == 0 or not in_split("very_hard", rate, calibration.thresholds["very_hard"])))
        assert [s.dir for s in split.sources] == ["../pool/humaneval", "../pool/mbpp_plus"]


def test_missing_pool_problems_name_the_import_command(tmp_path, examples_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)  # ./problems is searched too: keep a checkout's own pool out of it
    rates = {"humaneval-0": ProblemRate(samples=64, passed=1), "reverse-string": ProblemRate(samples=64, passed=1)}
    sources = [SplitSource(dir="../pool/humaneval", import_command="ttsd problems import humaneval --out problems/pool/humaneval")]
    split = make_split_files(rates, Calibration(model="m", samples=64), sources=sources, prefix="pool-")[1]
    path = save_split(split, tmp_path / "splits")
    assert path.name == "pool-very_hard.json"
    with pytest.raises(SplitProblemsMissing, match=r"1 problems not found in .*pool/humaneval \(humaneval-0\); recreate them with: ttsd problems import humaneval --out problems/pool/humaneval"):
        split_problems(split, path)
    (tmp_path / "pool" / "humaneval").mkdir(parents=True)
    problem = json.loads((examples_dir / "reverse-string.json").read_text())
    (tmp_path / "pool" / "humaneval" / "humaneval-0.json").write_text(json.dumps(dict(problem, id="humaneval-0")))
    assert [p.id for p in split_problems(split, path)] == ["humaneval-0", "reverse-string"]

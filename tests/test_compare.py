import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ttsd.bench import BenchManifest, RunKey, run_dir_for, write_manifest
from ttsd.cli import app
from ttsd.compare import compare_bench, to_markdown, write_outputs
from ttsd.runs import Summary

BUDGET = 8
# problem -> method -> per-seed discovery time (None: budget spent)
TIMES = {
    "p1": {"sdpo": [2, 4], "best-of-k": [4, None], "multi-turn": [6, 8]},
    "p2": {"sdpo": [1, None], "best-of-k": [None, None], "multi-turn": [3, None]},
}


def write_synthetic_bench(bench_dir: Path, times=TIMES, budget=BUDGET) -> Path:
    for problem_id, methods in times.items():
        for method, seeds in methods.items():
            for seed, t in enumerate(seeds):
                run_dir = run_dir_for(bench_dir, RunKey(problem_id=problem_id, method=method, seed=seed))
                run_dir.mkdir(parents=True)
                summary = Summary(
                    problem_id=problem_id, method=method, seed=seed, discovered=t is not None,
                    discovery_k=t, attempts_used=t if t is not None else budget, budget=budget, wall_s=1.0,
                )
                (run_dir / "summary.json").write_text(summary.model_dump_json())
    write_manifest(
        bench_dir,
        BenchManifest(split="synthetic", problem_ids=list(times), methods=["sdpo", "best-of-k", "multi-turn"], seeds=[0, 1]),
    )
    return bench_dir


@pytest.fixture
def report(tmp_path):
    bench = write_synthetic_bench(tmp_path / "bench")
    return compare_bench(bench, baselines=["best-of-k", "multi-turn"], ks=[1, 4, 8], probabilities=[0.5, 1.0], resamples=200)


def scope(report, kind, name):
    return next(s for s in report.scopes if s.scope == kind and s.name == name)


def stats(scope_report, method):
    return next(m for m in scope_report.methods if m.method == method)


def test_per_problem_numbers_from_known_discovery_times(report):
    p1 = scope(report, "problem", "p1")
    sdpo, bok, mt = stats(p1, "sdpo"), stats(p1, "best-of-k"), stats(p1, "multi-turn")
    assert [sdpo.discovery_at[k].estimate for k in (1, 4, 8)] == [0.0, 1.0, 1.0]
    assert [bok.discovery_at[k].estimate for k in (1, 4, 8)] == [0.0, 0.5, 0.5]
    assert [mt.discovery_at[k].estimate for k in (1, 4, 8)] == [0.0, 0.0, 1.0]
    assert (sdpo.discovered, sdpo.runs, bok.discovered, bok.runs) == (2, 2, 1, 2)
    # restricted mean to τ = 8: censored runs count as 8
    assert sdpo.mean_attempts == pytest.approx(3.0)
    assert bok.mean_attempts == pytest.approx(6.0)
    assert mt.mean_attempts == pytest.approx(7.0)
    # best-of-k pooled samples: 4 + 8 attempts, one pass
    assert bok.pass_at[1] == pytest.approx(1 / 12)
    assert bok.pass_at[4] == pytest.approx(1 / 3)
    assert (sdpo.attempts_at, bok.attempts_at, mt.attempts_at) == ({0.5: 2, 1.0: 4}, {0.5: 4, 1.0: None}, {0.5: 6, 1.0: 8})
    ratios = {r.baseline: r for r in p1.ratios}
    assert (ratios["best-of-k"].probability, ratios["best-of-k"].method_attempts, ratios["best-of-k"].baseline_attempts) == (0.5, 2, 4)
    assert ratios["best-of-k"].ratio == pytest.approx(2.0)
    assert (ratios["multi-turn"].probability, ratios["multi-turn"].method_attempts, ratios["multi-turn"].baseline_attempts) == (1.0, 4, 8)


def test_split_averages_problems(report):
    split = scope(report, "split", "synthetic")
    assert split.problems == ["p1", "p2"]
    sdpo = stats(split, "sdpo")
    # p1: F(1)=0, F(4)=1; p2: F(1)=0.5 (one of two seeds at 1) -> mean
    assert sdpo.discovery_at[1].estimate == pytest.approx(0.25)
    assert sdpo.discovery_at[4].estimate == pytest.approx(0.75)
    bok = stats(split, "best-of-k")
    assert bok.discovery_at[8].estimate == pytest.approx(0.25)
    low, high = sdpo.discovery_at[4].low, sdpo.discovery_at[4].high
    assert low <= 0.75 <= high and high - low > 0  # two problems, two seeds: a real band
    ratio = next(r for r in split.ratios if r.baseline == "best-of-k")
    # matched p = 0.25 (best-of-k's peak): sdpo reaches it at 1, best-of-k at 4
    assert (ratio.probability, ratio.method_attempts, ratio.baseline_attempts, ratio.ratio) == (0.25, 1, 4, 4.0)


def test_markdown_json_and_plots(report, tmp_path):
    written = write_outputs(report, tmp_path / "out")
    markdown = written["markdown"].read_text()
    assert "## Per split" in markdown and "## Per problem" in markdown
    assert "| problem p1 | best-of-k | 1/2 | 0.00" in markdown
    assert "| 4 | – | 6.0 (τ=8) | 4 vs 2 (p*=0.50) | 2.00 |" in markdown
    assert "(pass@k 0.33)" in markdown
    data = json.loads(written["json"].read_text())
    assert data["split"] == "synthetic" and len(data["scopes"]) == 3
    assert markdown.strip() == to_markdown(report).strip()
    pngs = sorted((tmp_path / "out" / "plots").glob("*.png"))
    assert [p.name for p in pngs] == ["problem-p1.png", "problem-p2.png", "split-synthetic.png"]
    check_png(pngs[-1])


def check_png(path: Path) -> None:
    import matplotlib.image as mpimg

    image = mpimg.imread(path)
    assert image.shape[0] >= 300 and image.shape[1] >= 400
    assert np.std(image[..., :3]) > 0.05  # not blank
    assert len(np.unique(image[..., :3].reshape(-1, 3), axis=0)) > 10


def test_compare_cli(tmp_path):
    bench = write_synthetic_bench(tmp_path / "bench")
    result = CliRunner().invoke(app, ["compare", str(bench), "--k", "1,4", "--resamples", "100"], terminal_width=250)
    assert result.exit_code == 0, result.output
    assert "best-of-k" in result.output and "2.00" in result.output
    assert (bench / "compare" / "compare.md").is_file()
    assert json.loads((bench / "compare" / "compare.json").read_text())["ks"] == [1, 4]


def test_compare_cli_bad_input(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["compare", str(tmp_path)])
    assert result.exit_code == 2 and "not a bench directory" in result.output
    bench = write_synthetic_bench(tmp_path / "bench")
    result = runner.invoke(app, ["compare", str(bench), "--k", "1,x"])
    assert result.exit_code == 2 and "--k" in result.output
    result = runner.invoke(app, ["compare", str(bench), "--p", "1.5"])
    assert result.exit_code == 2 and "--p" in result.output


def test_learning_diagnostics_are_pooled_over_runs(tmp_path):
    from ttsd.runs import DiscoveryLikelihood

    bench = write_synthetic_bench(tmp_path / "bench")
    # sdpo's runs: p1 seeds 0, 1 discovered (after 2 updates, then before any), p2 seed 0 discovered at k=1
    gaps = {("p1", 0): -0.2, ("p1", 1): -0.4, ("p2", 0): None, ("p2", 1): -0.3}
    found = {("p1", 0): (2, -30.0, -20.0), ("p1", 1): (0, -12.0, -12.0), ("p2", 0): (0, -8.0, -8.0)}
    for (problem_id, seed), gap in gaps.items():
        path = run_dir_for(bench, RunKey(problem_id=problem_id, method="sdpo", seed=seed)) / "summary.json"
        summary = Summary.model_validate_json(path.read_text())
        summary.teacher_logprob_gap = gap
        if (problem_id, seed) in found:
            updates, initial, discovery = found[(problem_id, seed)]
            summary.discovery_likelihood = DiscoveryLikelihood(
                tokens=10, updates_before=updates, initial_nats=initial, discovery_nats=discovery,
                gain_nats=discovery - initial, per_token_initial_nats=initial / 10,
                per_token_discovery_nats=discovery / 10, per_token_gain_nats=(discovery - initial) / 10,
            )
        path.write_text(summary.model_dump_json())
    report = compare_bench(bench, baselines=["best-of-k", "multi-turn"], ks=[1, 4], resamples=50)
    p1 = stats(scope(report, "problem", "p1"), "sdpo").learning
    assert (p1.runs_with_gap, p1.discoveries, p1.discoveries_after_updates) == (2, 2, 1)
    assert p1.teacher_logprob_gap == pytest.approx(-0.3) and p1.gain_nats == pytest.approx(5.0)
    assert p1.per_token_gain_nats == pytest.approx(0.5)
    split = stats(scope(report, "split", "synthetic"), "sdpo").learning
    assert split.teacher_logprob_gap == pytest.approx(-0.3) and split.runs_with_gap == 3
    assert (split.discoveries, split.discoveries_after_updates) == (3, 1) and split.gain_nats == pytest.approx(10 / 3)
    assert stats(scope(report, "split", "synthetic"), "best-of-k").learning is None  # it does not learn
    markdown = to_markdown(report)
    assert "## Learning diagnostics" in markdown
    assert "| problem p1 | sdpo | -0.3000 (2 runs) | 1/2 | 5.00 | 0.5000 |" in markdown
    result = CliRunner().invoke(app, ["compare", str(bench), "--k", "1,4", "--resamples", "50"], env={"COLUMNS": "250"})
    assert result.exit_code == 0 and "learning diagnostics" in result.output and "-0.3000 (2 runs)" in result.output


def test_copy_diagnostic_rows_pool_tokens_per_method(tmp_path):
    from ttsd.compare import copy_markdown, copy_rows
    from ttsd.runs import CopyGap

    bench = write_synthetic_bench(tmp_path / "bench")
    parts = {("p1", 0): (10, 1.0, 30, 0.0), ("p2", 1): (30, 2.0, 10, -1.0)}
    for (problem_id, seed), (nq, q, no, o) in parts.items():
        path = run_dir_for(bench, RunKey(problem_id=problem_id, method="sdpo", seed=seed)) / "summary.json"
        summary = Summary.model_validate_json(path.read_text())
        summary.copy_gap = CopyGap(quoted_tokens=nq, quoted_gap=q, other_tokens=no, other_gap=o)
        path.write_text(summary.model_dump_json())
    # quoted (10·1 + 30·2) / 40 = 1.75; other (30·0 + 10·(−1)) / 40 = −0.25
    assert copy_rows(bench) == [["sdpo", "2", "1.750 (40)", "-0.250 (40)", "2.000"]]
    assert "## Copy diagnostic" in copy_markdown(bench)
    assert copy_markdown(write_synthetic_bench(tmp_path / "plain")) == ""  # no run has one: no section
    result = CliRunner().invoke(app, ["compare", str(bench), "--k", "1,4", "--resamples", "50"], env={"COLUMNS": "250"})
    assert result.exit_code == 0 and "copy diagnostic" in result.output and "1.750 (40)" in result.output
    assert "| sdpo | 2 | 1.750 (40) | -0.250 (40) | 2.000 |" in (bench / "compare" / "compare.md").read_text()

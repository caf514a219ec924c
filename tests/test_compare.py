import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ttsd.bench import BenchManifest, RunKey, run_dir_for, write_manifest
from ttsd.cli import app
from ttsd.compare import compare_bench, to_markdown, write_outputs
from ttsd import metrics
from ttsd.runs import AttemptCost, AttemptRecord, PoolSummary, Summary

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
    return compare_bench(bench, baselines=["best-of-k", "multi-turn"], ks=[1, 4, 8], probabilities=[0.5, 1.0], simulations=50)


def scope(report, kind, name):
    return next(s for s in report.scopes if s.scope == kind and s.name == name)


def stats(scope_report, method):
    return next(m for m in scope_report.methods if m.method == method)


def ratio(scope_report, baseline, axis="attempts"):
    return next(r for r in scope_report.ratios if r.baseline == baseline and r.axis == axis)


def test_per_problem_numbers_from_known_discovery_times(report):
    p1 = scope(report, "problem", "p1")
    sdpo, bok, mt = stats(p1, "sdpo"), stats(p1, "best-of-k"), stats(p1, "multi-turn")
    assert [sdpo.discovery_at[k].estimate for k in (1, 4, 8)] == [0.0, 1.0, 1.0]
    assert [mt.discovery_at[k].estimate for k in (1, 4, 8)] == [0.0, 0.0, 1.0]
    # exact intervals over two seeds: 0/2 and 2/2 are not zero-width
    assert (sdpo.discovery_at[1].low, sdpo.discovery_at[1].high) == pytest.approx(metrics.clopper_pearson(0, 2))
    assert (sdpo.discovery_at[4].low, sdpo.discovery_at[4].high) == pytest.approx(metrics.clopper_pearson(2, 2))
    # best-of-k from every judged attempt of its seeded runs: 4 + 8 attempts, one pass; pass@k = k/12
    assert (bok.samples.source, bok.samples.samples, bok.samples.passes) == ("seeded runs", 12, 1)
    assert [bok.discovery_at[k].estimate for k in (1, 4, 8)] == pytest.approx([1 / 12, 4 / 12, 8 / 12])
    low, high = metrics.clopper_pearson(1, 12)
    assert (bok.discovery_at[4].low, bok.discovery_at[4].high) == pytest.approx((1 - (1 - low) ** 4, 1 - (1 - high) ** 4))
    assert (sdpo.discovered, sdpo.runs, bok.runs) == (2, 2, 2)
    # restricted mean to τ = 8: censored runs count as 8; best-of-k 1 + Σ_{k<8} (1 - k/12)
    assert sdpo.mean_attempts == pytest.approx(3.0)
    assert bok.mean_attempts == pytest.approx(1 + 7 - 28 / 12)
    assert mt.mean_attempts == pytest.approx(7.0)
    assert (sdpo.attempts_at[0.5].estimate, sdpo.attempts_at[1.0].estimate) == (2, 4)
    assert (bok.attempts_at[0.5].estimate, bok.attempts_at[1.0].estimate) == (6, 12)  # the pool is not budget-bound
    # matched p* = best-of-k's peak within the budget, 8/12: sdpo reaches it at 4, best-of-k at 8
    r = ratio(p1, "best-of-k")
    assert (r.probability, r.method_at.estimate, r.baseline_at.estimate) == (pytest.approx(2 / 3), 4, 8)
    assert r.ratio.estimate == pytest.approx(2.0) and r.ratio.low < 2.0 and (r.ratio.high is None or r.ratio.high > 2.0)
    r = ratio(p1, "multi-turn")
    assert (r.probability, r.method_at.estimate, r.baseline_at.estimate, r.ratio.estimate) == (1.0, 4, 8, 2.0)


def test_ratio_interval_is_built_from_the_95_percent_bands(report):
    p1 = scope(report, "problem", "p1")
    r = ratio(p1, "best-of-k")
    # sdpo's lower 95% band reaches 2/3 when both seeds have discovered (k = 4): CP_low(2, 2) = 0.025^(1/2) < 2/3,
    # so it never does within the budget: the method's upper end is unbounded, the ratio's lower end 0
    assert metrics.clopper_pearson(2, 2, 0.95)[0] < 2 / 3
    assert r.method_at.high is None and r.ratio.low == 0.0
    low, high = metrics.clopper_pearson(1, 12, 0.95)
    assert r.baseline_at.low == math.ceil(math.log(1 / 3) / math.log(1 - high))
    assert r.baseline_at.high == math.ceil(math.log(1 / 3) / math.log(1 - low))


def test_rate_ratio_per_problem_and_across(report):
    p1 = scope(report, "problem", "p1")
    test = next(t for t in p1.rate_tests if t.method == "sdpo")
    # no steps recorded: the first batch is the configured one (none here: 1 attempt); sdpo after attempt 1:
    # 2 discoveries in (2 - 1) + (4 - 1) = 4 attempts vs best-of-k 1 pass in 12: θ̂ = (2/4) / (1/12) = 6
    assert test.skip == 1 and (test.result.observed, test.result.expected) == (2, pytest.approx(4 / 12))
    assert test.result.estimate == pytest.approx(6.0)
    split = scope(report, "split", "synthetic")
    combined = next(t for t in split.rate_tests if t.method == "sdpo")
    # p2: best-of-k never passed, sdpo found once after attempt 1 (its seed 0 at 1 is within the first batch)
    assert combined.result.strata == 1 and combined.result.observed == 2
    assert 0 <= combined.power <= 1
    assert "cannot distinguish" in p1.verdict or "support" in p1.verdict


def test_split_averages_problems_and_its_label_names_them(tmp_path):
    bench = write_synthetic_bench(tmp_path / "bench")
    write_manifest(bench, BenchManifest(split="synthetic", problem_ids=["p1", "p2", "p3"], methods=["sdpo"], seeds=[0, 1]))
    report = compare_bench(bench, baselines=["best-of-k", "multi-turn"], ks=[1, 4, 8], simulations=50)
    split = scope(report, "split", "synthetic")
    assert split.problems == ["p1", "p2"]
    assert split.label == "split synthetic: 2 of 3 problems (p1, p2)"
    sdpo = stats(split, "sdpo")
    # p1: F(1)=0, F(4)=1; p2: F(1)=0.5 (one of two seeds at 1) -> mean; interval: pooled 1/4 and 3/4
    assert sdpo.discovery_at[1].estimate == pytest.approx(0.25)
    assert sdpo.discovery_at[4].estimate == pytest.approx(0.75)
    assert (sdpo.discovery_at[4].low, sdpo.discovery_at[4].high) == pytest.approx(metrics.clopper_pearson(3, 4))
    bok = stats(split, "best-of-k")
    assert bok.discovery_at[8].estimate == pytest.approx((8 / 12 + 0) / 2)
    assert split.label in to_markdown(report)


def write_costs(bench: Path, method: str, problem_id: str, seed: int, attempts: int, cost: AttemptCost, passed_at: int | None) -> None:
    run_dir = run_dir_for(bench, RunKey(problem_id=problem_id, method=method, seed=seed))
    with (run_dir / "attempts.jsonl").open("w") as handle:
        for k in range(1, attempts + 1):
            record = AttemptRecord(k=k, step=k - 1, response="", code=None, verdict="accepted" if k == passed_at else "wrong_answer",
                                   tests_passed=0, tests_total=1, feedback="", num_tokens=10, finish_reason="stop", cost=cost)
            handle.write(record.model_dump_json() + "\n")


def test_pool_and_costs_give_compute_and_wall_ratios(tmp_path):
    times = {"p1": {"sdpo": [2, 4], "multi-turn": [6, 8]}}
    bench = write_synthetic_bench(tmp_path / "bench", times=times)
    sdpo_cost = AttemptCost(wall_s=2.0, sampled_tokens=10, scored_tokens=20, trained_tokens=5)  # 40 units
    for method, seeds in times["p1"].items():
        for seed, t in enumerate(seeds):
            write_costs(bench, method, "p1", seed, t, sdpo_cost if method == "sdpo" else AttemptCost(wall_s=1.0, sampled_tokens=10), t)
    pool_dir = bench / "pool" / "p1"
    pool_dir.mkdir(parents=True)
    pool = PoolSummary(problem_id="p1", samples=100, passes=10, target=100, finished=True, sampled_tokens=1000, wall_s=50.0)
    (pool_dir / "pool.json").write_text(pool.model_dump_json())
    report = compare_bench(bench, baselines=["best-of-k", "multi-turn"], ks=[1, 4], simulations=50)
    p1 = scope(report, "problem", "p1")
    bok = stats(p1, "best-of-k")
    assert (bok.samples.source, bok.samples.samples, bok.samples.passes, bok.runs) == ("pool", 100, 10, 0)
    assert bok.discovery_at[4].estimate == pytest.approx(metrics.pass_at_k(100, 10, 4))
    assert p1.missing_axes == []
    attempts, compute, wall = (ratio(p1, "best-of-k", axis) for axis in ("attempts", "compute", "wall"))
    # p* = best-of-k's F(8) = pass@8 of (100, 10); sdpo reaches it at attempt 4 = 160 units = 8 s;
    # best-of-k at attempt 8 = 80 units (10 per attempt) = 4 s (0.5 s per attempt)
    assert attempts.probability == pytest.approx(metrics.pass_at_k(100, 10, 8))
    assert (attempts.method_at.estimate, attempts.baseline_at.estimate, attempts.ratio.estimate) == (4, 8, 2.0)
    assert (compute.method_at.estimate, compute.baseline_at.estimate) == (pytest.approx(160), pytest.approx(80))
    assert compute.ratio.estimate == pytest.approx(0.5)
    assert (wall.method_at.estimate, wall.baseline_at.estimate, wall.ratio.estimate) == (pytest.approx(8), pytest.approx(4), pytest.approx(0.5))
    assert set(stats(p1, "sdpo").curves) == {"attempts", "compute", "wall"}
    written = write_outputs(report, tmp_path / "out")
    markdown = written["markdown"].read_text()
    assert "| problem p1 | best-of-k | compute |" in markdown and "10/100 samples (pool)" in markdown
    check_png(written["problem:p1"])


def test_runs_without_costs_skip_the_compute_axes(report):
    p1 = scope(report, "problem", "p1")
    assert p1.missing_axes == ["compute", "wall"]
    assert {r.axis for r in p1.ratios} == {"attempts"}
    assert "skipped: runs without per-attempt costs" in to_markdown(report)


def test_markdown_json_and_plots(report, tmp_path):
    written = write_outputs(report, tmp_path / "out")
    markdown = written["markdown"].read_text()
    assert "## Per split" in markdown and "## Per problem" in markdown and "## What the data support" in markdown
    assert "| problem p1 | best-of-k | 1/12 samples (seeded runs) | 0.08 [" in markdown
    assert "## Rate ratio against best-of-k" in markdown
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
    result = CliRunner().invoke(app, ["compare", str(bench), "--k", "1,4", "--simulations", "50"], terminal_width=250)
    assert result.exit_code == 0, result.output
    assert "best-of-k" in result.output and "2.00" in result.output and "power" in result.output
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
    report = compare_bench(bench, baselines=["best-of-k", "multi-turn"], ks=[1, 4], simulations=50)
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
    result = CliRunner().invoke(app, ["compare", str(bench), "--k", "1,4", "--simulations", "50"], env={"COLUMNS": "250"})
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
    result = CliRunner().invoke(app, ["compare", str(bench), "--k", "1,4", "--simulations", "50"], env={"COLUMNS": "250"})
    assert result.exit_code == 0 and "copy diagnostic" in result.output and "1.750 (40)" in result.output
    assert "| sdpo | 2 | 1.750 (40) | -0.250 (40) | 2.000 |" in (bench / "compare" / "compare.md").read_text()


def test_verdict_says_what_a_clear_difference_supports(tmp_path):
    # sdpo discovers in every seed by attempt 12; best-of-k's pool passes 5 times in 1000
    bench = write_synthetic_bench(tmp_path / "bench", times={"p1": {"sdpo": [8, 10, 12, 9, 11]}}, budget=64)
    pool_dir = bench / "pool" / "p1"
    pool_dir.mkdir(parents=True)
    (pool_dir / "pool.json").write_text(PoolSummary(problem_id="p1", samples=1000, passes=5, target=1000, finished=True).model_dump_json())
    report = compare_bench(bench, baselines=["best-of-k"], ks=[16], simulations=50)
    p1 = scope(report, "problem", "p1")
    test = p1.rate_tests[0]
    # after attempt 1: 5 discoveries in 7 + 9 + 11 + 8 + 10 = 45 attempts, against 0.005 per attempt
    assert (test.result.observed, test.result.expected) == (5, pytest.approx(45 * 0.005))
    assert test.result.p_value < 0.01 and test.result.low > 1
    assert p1.verdict.startswith("problem p1: the data support a higher per-attempt discovery rate for sdpo")


def test_plan_reads_measured_rates_from_a_bench(tmp_path):
    from tests.test_planning import write_split

    bench = write_synthetic_bench(tmp_path / "bench", times={"p1": {"sdpo": [2]}})
    write_costs(bench, "sdpo", "p1", 0, 2, AttemptCost(wall_s=3.0, sampled_tokens=200), 2)
    pool_dir = bench / "pool" / "p1"
    pool_dir.mkdir(parents=True)
    pool = PoolSummary(problem_id="p1", samples=8, passes=0, target=8, finished=True, sampled_tokens=800, wall_s=8.0)
    (pool_dir / "pool.json").write_text(pool.model_dump_json())
    split = write_split(tmp_path / "split.json", {"x": 2, "y": 1})
    result = CliRunner().invoke(app, ["plan", "--split", str(split), "--from-bench", str(bench), "--simulations", "50"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "no time estimate" not in result.output and " h" in result.output
    # (2 × 200 + 800) tokens over 10 attempts = 120 per attempt, (2 × 3 + 8) s / 10 = 1.4 s: the table's tokens / attempts
    from ttsd.cli.bench import _measured_rates

    assert _measured_rates(bench) == pytest.approx((120.0, 1.4))
    empty = write_synthetic_bench(tmp_path / "empty", times={"p1": {"sdpo": [2]}})
    result = CliRunner().invoke(app, ["plan", "--split", str(split), "--from-bench", str(empty)])
    assert result.exit_code == 2 and "no runs or pool with recorded per-attempt costs" in result.output


def test_population_interval_from_five_problems(tmp_path):
    times = {f"q{i}": {"sdpo": [2 + i, None, 3]} for i in range(5)}
    bench = write_synthetic_bench(tmp_path / "bench", times=times)
    report = compare_bench(bench, baselines=["best-of-k"], ks=[1, 4], simulations=50)
    split = stats(scope(report, "split", "synthetic"), "sdpo")
    at4 = split.population_at[4]
    # per problem (times 2 + i, censored, 3) F̂(4) = 2/3 for q0..q2, 1/3 for q3, q4: mean 8/15
    estimates = np.array([2 / 3, 2 / 3, 2 / 3, 1 / 3, 1 / 3])
    half = metrics.t_quantile(0.95, 4) * np.std(estimates, ddof=1) / math.sqrt(5)
    assert at4.estimate == pytest.approx(8 / 15)
    fixed = split.discovery_at[4]
    assert at4.low == pytest.approx(min(8 / 15 - half, fixed.low)) and at4.high == pytest.approx(max(8 / 15 + half, fixed.high))
    assert "For problems like these" in to_markdown(report)
    assert stats(scope(report, "problem", "q0"), "sdpo").population_at == {}
    small = compare_bench(write_synthetic_bench(tmp_path / "small"), baselines=["best-of-k"], ks=[1], simulations=50)
    assert "needs at least 5 problems (split synthetic has 2)" in to_markdown(small)

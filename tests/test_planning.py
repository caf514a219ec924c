import math

import numpy as np
import pytest
from typer.testing import CliRunner

from ttsd import planning
from ttsd.cli import app
from ttsd.splits import Calibration, ProblemRate, SplitFile


def test_expected_attempts_closed_forms():
    p, budget = 0.05, 64
    # θ = 1: the geometric restricted mean (1 - (1-p)^B) / p
    assert planning.expected_attempts(p, budget, 16, 1.0) == pytest.approx((1 - (1 - p) ** budget) / p)
    # rate 0.5, batch 1, θ = 2 (hazard 1 afterwards): P(T > 0) = 1, P(T > 1) = 0.5, P(T > 2) = 0
    assert planning.expected_attempts(0.5, 3, 1, 2.0) == pytest.approx(1.5)


def test_attempts_ratio_ceiling():
    # best-of-k reaches 0.5 within 7 attempts at rate 0.1: inside the shared batch of 16, no gain possible
    assert planning.attempts_ratio_ceiling(0.1, 16, 0.5) == 1.0
    k = math.ceil(math.log(0.5) / math.log(0.99))  # 69
    assert planning.attempts_ratio_ceiling(0.01, 16, 0.5) == pytest.approx(k / 17)
    assert planning.attempts_ratio_ceiling(0.0, 16, 0.5) is None


def test_simulated_power_has_the_right_size_and_grows():
    design = dict(budget=64, batch=16, pool=256, alpha=0.1, simulations=300)
    null = planning.simulate_power([0.02, 0.05], seeds=5, effect=1.0, **design)
    assert null <= 0.1 + 0.04  # the exact conditional test is conservative
    few = planning.simulate_power([0.02, 0.05], seeds=3, effect=3.0, **design)
    many = planning.simulate_power([0.02, 0.05], seeds=20, effect=3.0, **design)
    assert null < few < many


def test_simulated_power_agrees_with_the_normal_approximation_for_a_large_study():
    """log θ̂ ≈ Normal(log θ, 1/E[O] + 1/E[c]): power ≈ Φ(|log θ| / se − z_{1−α/2})."""
    rates, seeds, budget, batch, pool, theta, alpha = [0.03] * 6, 10, 256, 16, 1024, 1.6, 0.05
    power = planning.simulate_power(rates, seeds=seeds, budget=budget, batch=batch, pool=pool, effect=theta, alpha=alpha, simulations=300)
    expected_discoveries, expected_passes = 0.0, 0.0
    for r in rates:
        survive_batch = (1 - r) ** batch
        later = 1 - (1 - theta * r) ** (budget - batch)
        expected_discoveries += seeds * survive_batch * later
        expected_passes += pool * r
    se = math.sqrt(1 / expected_discoveries + 1 / expected_passes)
    z = 1.959964
    approx = 0.5 * (1 + math.erf((abs(math.log(theta)) / se - z) / math.sqrt(2)))
    assert power == pytest.approx(approx, abs=0.12)


def test_plan_finds_the_cheapest_design_and_warns():
    plan = planning.plan_study({"a": 0.1, "b": 0.01}, effect=2.0, power=0.8, alpha=0.05, batch=16, tokens_per_attempt=300,
                               seconds_per_attempt=0.5, seed_choices=(5, 20), budget_batches=(4, 16), simulations=100)
    assert plan.best is not None and plan.best.power >= 0.8
    reaching = [d for d in plan.designs if d.power >= 0.8]
    assert plan.designs[: len(reaching)] == sorted(reaching, key=lambda d: d.attempts) and plan.best == reaching[0]
    assert plan.best.pool == 4 * plan.best.budget
    assert plan.best.sampled_tokens == pytest.approx(plan.best.attempts * 300) and plan.best.seconds == pytest.approx(plan.best.attempts * 0.5)
    text = " ".join(plan.warnings)
    assert "a: with batch 16" in text and "unreachable" in text  # b·r = 1.6: the first batch does it
    assert "b: with batch 16" not in text
    assert "only 2 problems" in text


def test_plan_without_a_reachable_design_says_so():
    plan = planning.plan_study({"a": 0.001}, effect=1.2, power=0.9, alpha=0.01, batch=16, seed_choices=(3,), budget_batches=(4,),
                               simulations=50, max_problem_copies=1)
    assert plan.best is None and any("no design tried reaches" in w for w in plan.warnings)
    assert all(d.seconds is None for d in plan.designs)


def write_split(path, rates):
    split = SplitFile(
        name="tiny", problem_ids=list(rates), calibration=Calibration(model="m", samples=64, max_tokens=512),
        rates={pid: ProblemRate(samples=64, passed=passed) for pid, passed in rates.items()},
    )
    path.write_text(split.model_dump_json())
    return path


def test_plan_cli(tmp_path):
    split = write_split(tmp_path / "split.json", {"x": 2, "y": 1})
    result = CliRunner().invoke(app, ["plan", "--split", str(split), "--simulations", "50", "--seconds-per-attempt", "0.73"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "problems" in result.output and "seeds" in result.output and "pool" in result.output
    assert "only 2 problems" in result.output
    assert " h" in result.output  # a time estimate
    bad = CliRunner().invoke(app, ["plan", "--split", str(tmp_path / "nope.json")])
    assert bad.exit_code == 2 and "nope.json" in bad.output
    empty = write_split(tmp_path / "empty.json", {})
    result = CliRunner().invoke(app, ["plan", "--split", str(empty)])
    assert result.exit_code == 2 and "no calibrated rates" in result.output

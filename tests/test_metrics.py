import math
import sys
from pathlib import Path
from fractions import Fraction
from math import comb

import numpy as np
import pytest

from ttsd import metrics
from ttsd.metrics import Observation as O


def found(t: int) -> O:
    return O(time=t, discovered=True)


def censored(t: int) -> O:
    return O(time=t, discovered=False)


def test_discovery_curve_without_censoring_is_the_empirical_fraction():
    curve = metrics.kaplan_meier_discovery([found(1), found(3), found(3), found(6)], 8)
    assert curve.tolist() == [0.25, 0.25, 0.75, 0.75, 0.75, 1.0, 1.0, 1.0]


def test_discovery_curve_is_undefined_beyond_the_budget_of_censored_runs():
    # two of four runs spent a budget of 4: known "not discovered" up to 4, unknown after
    curve = metrics.kaplan_meier_discovery([found(2), found(4), censored(4), censored(4)], 6)
    assert curve[:4].tolist() == [0.0, 0.25, 0.25, 0.5]
    assert np.isnan(curve[4]) and np.isnan(curve[5])
    assert metrics.defined_length(curve) == 4


def test_kaplan_meier_with_early_censoring_hand_computed():
    # times 2 (found), 3 (censored), 5 (found): S(2)=2/3, at risk at 5 is 1 -> S(5)=0
    curve = metrics.kaplan_meier_discovery([found(2), censored(3), found(5)], 6)
    np.testing.assert_allclose(curve, [0, 1 / 3, 1 / 3, 1 / 3, 1, 1])
    # the same with the last run censored instead: undefined after 5
    curve = metrics.kaplan_meier_discovery([found(2), found(3), censored(5)], 6)
    np.testing.assert_allclose(curve[:5], [0, 1 / 3, 2 / 3, 2 / 3, 2 / 3])
    assert np.isnan(curve[5])


def test_discovery_curve_matches_geometric_law_by_simulation():
    rng = np.random.default_rng(7)
    p, budget, seeds = 0.1, 30, 4000
    times = rng.geometric(p, size=seeds)
    observations = [found(int(t)) if t <= budget else censored(budget) for t in times]
    curve = metrics.kaplan_meier_discovery(observations, budget)
    expected = 1 - (1 - p) ** np.arange(1, budget + 1)
    assert np.max(np.abs(curve - expected)) < 0.03


def test_kaplan_meier_is_unbiased_under_random_censoring():
    rng = np.random.default_rng(3)
    p, seeds = 0.2, 6000
    times = rng.geometric(p, size=seeds)
    budgets = rng.integers(3, 15, size=seeds)  # unequal budgets: naive fractions would be biased low
    observations = [found(int(t)) if t <= b else censored(int(b)) for t, b in zip(times, budgets)]
    curve = metrics.kaplan_meier_discovery(observations, 10)
    expected = 1 - (1 - p) ** np.arange(1, 11)
    assert np.max(np.abs(curve - expected)) < 0.03
    naive = np.array([np.mean([o.discovered and o.time <= k for o in observations]) for k in range(1, 11)])
    assert np.max(expected - naive) > 0.05  # the censoring correction matters here


@pytest.mark.parametrize("n,c,k", [(10, 3, 1), (10, 3, 2), (10, 3, 8), (20, 1, 5), (64, 0, 4), (5, 5, 5), (100, 7, 64)])
def test_pass_at_k_matches_the_binomial_formula(n, c, k):
    assert metrics.pass_at_k(n, c, k) == pytest.approx(1 - comb(n - c, k) / comb(n, k), abs=1e-12)


def test_pass_at_k_hand_values_and_edges():
    assert metrics.pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert metrics.pass_at_k(4, 2, 2) == pytest.approx(1 - 1 / 6)
    assert metrics.pass_at_k(4, 2, 3) == 1.0  # n - c < k: every k-subset holds a pass
    assert metrics.pass_at_k(50, 0, 10) == 0.0
    with pytest.raises(ValueError):
        metrics.pass_at_k(5, 6, 1)
    with pytest.raises(ValueError):
        metrics.pass_at_k(5, 1, 6)


def test_pass_at_k_is_stable_for_large_n():
    value = metrics.pass_at_k(100_000, 37, 1000)
    assert 0 < value < 1 and math.isfinite(value)
    exact = 1 - Fraction(comb(100_000 - 37, 1000), comb(100_000, 1000))  # big-integer arithmetic
    assert value == pytest.approx(float(exact), rel=1e-9)


def test_pass_at_k_agrees_with_simulated_subsets():
    rng = np.random.default_rng(11)
    outcomes = np.array([1] * 4 + [0] * 16)
    for k in (1, 3, 7):
        hits = np.mean([outcomes[rng.choice(20, size=k, replace=False)].any() for _ in range(20000)])
        assert metrics.pass_at_k(20, 4, k) == pytest.approx(hits, abs=0.015)


def test_pass_at_k_from_iid_attempts_estimates_the_geometric_curve():
    rng = np.random.default_rng(5)
    p, n = 0.05, 4000
    c = int(rng.binomial(n, p))
    curve = metrics.pass_at_k_curve(n, c, 20)
    np.testing.assert_allclose(curve, 1 - (1 - p) ** np.arange(1, 21), atol=0.05)


def test_restricted_mean_attempts_hand_computed():
    # times 1, 3 and one censored at 4: F = [1/3, 1/3, 2/3, 2/3]; E[min(T,4)] = 1 + 2/3 + 2/3 + 1/3
    curve = metrics.kaplan_meier_discovery([found(1), found(3), censored(4)], 4)
    assert metrics.restricted_mean_attempts(curve) == pytest.approx((1 + 3 + 4) / 3)
    assert metrics.restricted_mean_attempts(curve, horizon=2) == pytest.approx((1 + 2 + 2) / 3)


def test_restricted_mean_of_geometric_matches_closed_form():
    p, tau = 0.2, 12
    curve = 1 - (1 - p) ** np.arange(1, tau + 1)
    # E[min(T, τ)] = (1 - (1-p)^τ) / p for geometric T
    assert metrics.restricted_mean_attempts(curve, tau) == pytest.approx((1 - (1 - p) ** tau) / p)


def test_attempts_to_reach_and_ratio():
    fast = np.array([0.2, 0.5, 0.7, 0.9])
    slow = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.55, np.nan])
    assert metrics.attempts_to_reach(fast, 0.5) == 2
    assert metrics.attempts_to_reach(slow, 0.5) == 5
    assert metrics.attempts_to_reach(slow, 0.6) is None
    assert metrics.attempts_ratio(slow, fast, 0.5) == pytest.approx(2.5)
    assert metrics.matched_probability([fast, slow]) == pytest.approx(0.55)
    assert metrics.matched_probability([fast, np.zeros(4)]) is None


def test_split_curve_weighs_problems_equally():
    easy = [found(1)] * 4  # four seeds
    hard = [censored(3)]  # one seed
    band = metrics.split_band([easy, hard], [1, 2, 3])
    np.testing.assert_allclose(band.estimate, [0.5, 0.5, 0.5])


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import interval_coverage  # noqa: E402  (the simulations docs/statistics.md reports, at fewer repetitions)


def binomial_tail(n: int, p: float, at_least: int) -> float:
    return sum(comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(at_least, n + 1))


@pytest.mark.parametrize("n,j,p", [(10, 4, 0.3), (3, 1, 0.05), (64, 1, 0.01), (200, 150, 0.8), (5, 5, 0.9)])
def test_regularized_beta_is_the_binomial_tail(n, j, p):
    assert metrics.regularized_beta(p, j, n - j + 1) == pytest.approx(binomial_tail(n, p, j), rel=1e-10)


def test_clopper_pearson_hand_values():
    # 0/n: [0, 1 - (α/2)^(1/n)]; n/n: [(α/2)^(1/n), 1]
    assert metrics.clopper_pearson(0, 3) == pytest.approx((0.0, 1 - 0.05 ** (1 / 3)))
    assert metrics.clopper_pearson(3, 3) == pytest.approx((0.05 ** (1 / 3), 1.0))
    low, high = metrics.clopper_pearson(2, 3)
    assert (round(low, 2), round(high, 2)) == (0.14, 0.98)  # the exact interval for 2/3
    assert binomial_tail(3, low, 2) == pytest.approx(0.05)  # P(X >= 2 | low) = α/2
    assert 1 - binomial_tail(3, high, 3) == pytest.approx(0.05)  # P(X <= 2 | high) = α/2
    low95, high95 = metrics.clopper_pearson(2, 3, 0.95)
    assert low95 < low and high95 > high


def test_sequential_band_is_exact_without_censoring_and_never_zero_width():
    band = metrics.sequential_band([censored(64)] * 3, [1, 16, 64])
    assert band.estimate == [0.0, 0.0, 0.0]
    assert band.low == [0.0] * 3 and band.high == pytest.approx([1 - 0.05 ** (1 / 3)] * 3)
    band = metrics.sequential_band([found(1)] * 3, [1, 4])
    assert band.estimate == [1.0, 1.0] and band.low == pytest.approx([0.05 ** (1 / 3)] * 2) and band.high == [1.0, 1.0]
    # mbpp-18's sdpo runs: discoveries at 32 and 34, one run censored at the budget 64
    band = metrics.sequential_band([found(32), found(34), censored(64)], [16, 32, 64])
    assert band.estimate == pytest.approx([0, 1 / 3, 2 / 3])
    assert band.low[2] == pytest.approx(metrics.clopper_pearson(2, 3)[0])
    assert band.high[1] == pytest.approx(metrics.clopper_pearson(1, 3)[1])


def test_sequential_band_bounds_censored_runs_both_ways():
    # at k = 6: one discovery (2), one run censored at 3 (unknown), one censored at 8 (known failure)
    observations = [found(2), censored(3), censored(8)]
    band = metrics.sequential_band(observations, [2, 3, 6])
    assert band.estimate[2] == pytest.approx(1 / 3)  # Kaplan–Meier: the run censored at 3 drops out
    assert band.low[2] == pytest.approx(metrics.clopper_pearson(1, 3)[0])  # counted as a failure
    assert band.high[2] == pytest.approx(metrics.clopper_pearson(2, 3)[1])  # counted as a discovery
    assert band.high[1] == pytest.approx(metrics.clopper_pearson(1, 3)[1])  # censored exactly at 3: a known failure


@pytest.mark.parametrize("seeds", [3, 5, 10])
def test_sequential_interval_coverage_of_geometric_truth(seeds):
    """90% intervals over `seeds` runs of geometric discovery times: coverage at least 85% at every
    (rate, k); Clopper–Pearson is conservative, so the mean is above 90% (docs/statistics.md has
    the full table from benchmarks/interval_coverage.py)."""
    coverages, widths = [], []
    for i, rate in enumerate((0.03, 0.1, 0.3)):
        coverage, width = interval_coverage.sequential_coverage(rate, seeds, ks=(1, 4, 16), reps=300, seed=100 * seeds + i)
        coverages += list(coverage)
        widths += list(width)
    assert min(coverages) >= 0.85, coverages
    assert np.mean(coverages) >= 0.90
    # not the trivial [0, 1]: narrower with more seeds
    assert max(widths) < {3: 0.85, 5: 0.7, 10: 0.55}[seeds], widths


def test_sequential_interval_coverage_with_unequal_budgets():
    for i, rate in enumerate((0.03, 0.1)):
        coverage, _ = interval_coverage.sequential_coverage(rate, 5, ks=(4, 16, 64), reps=300, censoring=True, seed=7 + i)
        assert min(coverage) >= 0.85, coverage


def test_split_band_pools_counts_for_equal_seeds():
    p1 = [found(2), censored(8), censored(8)]
    p2 = [found(1), found(3), censored(8)]
    band = metrics.split_band([p1, p2], [1, 4])
    assert band.estimate == pytest.approx([1 / 6, 1 / 2])
    for i, pooled in enumerate((1, 3)):  # D out of P·S = 6
        assert (band.low[i], band.high[i]) == pytest.approx(metrics.clopper_pearson(pooled, 6))
    assert metrics.effective_runs([3, 3]) == 6 and metrics.effective_runs([2, 6]) == pytest.approx(4 / (1 / 2 + 1 / 6))


@pytest.mark.parametrize("rates", [(0.01, 0.1), (0.01, 0.03, 0.1, 0.3)])
def test_split_interval_coverage_over_heterogeneous_problems(rates):
    for seeds in (3, 5):
        coverage = interval_coverage.split_coverage(rates, seeds, ks=(1, 4, 16), reps=250, seed=seeds)
        assert min(coverage) >= 0.85, coverage


def test_t_quantile_hand_values():
    assert metrics.t_quantile(0.95, 1) == pytest.approx(1 / math.tan(math.pi * 0.05), rel=1e-9)  # Cauchy
    assert metrics.t_quantile(0.95, 4) == pytest.approx(2.131847, abs=1e-6)
    assert metrics.t_quantile(0.975, 10_000) == pytest.approx(1.959964, abs=1e-3)


def test_population_band_is_the_union_of_the_t_and_fixed_intervals():
    estimates = [np.array([0.0, 0.5]), np.array([0.0, 1.0]), np.array([0.0, 0.0])]
    fixed = metrics.Band(estimate=[0.0, 0.5], low=[0.0, 0.3], high=[0.3, 0.7])
    band = metrics.population_band(estimates, fixed)
    half = metrics.t_quantile(0.95, 2) * 0.5 / math.sqrt(3)  # sd of (0.5, 1, 0) is 0.5
    assert band.estimate == [0.0, 0.5]
    assert band.low == pytest.approx([0.0, max(0.5 - half, 0.0)]) and band.high == pytest.approx([0.3, min(0.5 + half, 1.0)])
    # every problem at 0: the t-interval collapses, the fixed one keeps the band open
    assert metrics.population_band(estimates[2:] * 5, fixed).high[0] == 0.3
    with pytest.raises(ValueError):
        metrics.population_band(estimates[:1], fixed)


@pytest.mark.parametrize("problems", [5, 10])
def test_population_interval_coverage_of_a_population_of_problems(problems):
    """Problems drawn from a population (rates ~ Beta(2, 30), mean 0.06), 3 seeds each: the population
    interval covers the population's mean curve; the fixed-problem interval is not meant to."""
    population, fixed = interval_coverage.population_coverage(problems, 3, (2.0, 30.0), reps=200, seed=problems)
    assert min(population) >= 0.85, population
    assert np.all(population >= fixed - 1e-9)


def test_pool_band_maps_the_exact_rate_interval():
    band = metrics.pool_band(144, 2, [1, 64, 200])
    assert band.estimate[1] == pytest.approx(1 - comb(142, 64) / comb(144, 64))  # mbpp-18: 0.69
    assert band.estimate[2] == pytest.approx(1 - (1 - 2 / 144) ** 200)  # beyond N: the plug-in
    assert metrics.pool_estimate(10, 0, 20) == 0.0
    low, high = metrics.clopper_pearson(2, 144)
    assert band.low == pytest.approx([low, 1 - (1 - low) ** 64, 1 - (1 - low) ** 200])
    assert band.high == pytest.approx([high, 1 - (1 - high) ** 64, 1 - (1 - high) ** 200])
    assert metrics.pool_band(300, 0, [64]).high[0] > 0  # 0 passes: not a zero-width interval


def test_pools_band_is_bonferroni_over_problems_and_covers():
    band = metrics.pools_band([(100, 1), (100, 10)], [1])
    low1, _ = metrics.clopper_pearson(1, 100, 0.95)
    low2, _ = metrics.clopper_pearson(10, 100, 0.95)
    assert band.estimate[0] == pytest.approx(0.055) and band.low[0] == pytest.approx((low1 + low2) / 2)
    rng = np.random.default_rng(4)
    rates, ks = (0.01, 0.05), np.array([1, 16, 64])
    truth = np.mean([metrics.geometric_curve(r, ks) for r in rates], axis=0)
    covered = np.zeros(3)
    for _ in range(300):
        band = metrics.pools_band([(200, int(rng.binomial(200, r))) for r in rates], ks)
        covered += (np.array(band.low) <= truth) & (truth <= np.array(band.high))
    assert np.all(covered / 300 >= 0.9)


def test_reach_interval_inverts_the_band():
    band = metrics.Band(estimate=[0.1, 0.3, 0.5, 0.6], low=[0.0, 0.1, 0.2, 0.5], high=[0.4, 0.6, 0.8, 0.9])
    assert metrics.reach_interval([1, 2, 3, 4], band, 0.5) == metrics.Reach(estimate=3, low=2, high=4)
    assert metrics.reach_interval([1, 2, 3, 4], band, 0.7) == metrics.Reach(estimate=None, low=3, high=None)
    assert metrics.reach_interval([1, 2, 3, 4], band, 0.95) == metrics.Reach(estimate=None, low=4, high=None)


def test_pools_reach_hand_values():
    reach = metrics.pools_reach([(1000, 100)], 0.5)
    assert reach.estimate == next(k for k in range(1, 100) if metrics.pass_at_k(1000, 100, k) >= 0.5)
    low, high = metrics.clopper_pearson(100, 1000)
    assert reach.low == math.ceil(math.log(0.5) / math.log(1 - high))
    assert reach.high == math.ceil(math.log(0.5) / math.log(1 - low))
    assert metrics.pools_reach([(100, 0)], 0.5).high is None and metrics.pools_reach([(100, 0)], 0.5).estimate is None
    # far beyond any budget: 1/12 at p = 2/3 needs ~500 attempts at the rate's lower end
    low, _ = metrics.clopper_pearson(1, 12, 0.95)
    assert metrics.pools_reach([(12, 1)], 2 / 3, 0.95).high == math.ceil(math.log(1 / 3) / math.log(1 - low))
    # on a cost axis (10 units per attempt) every end is 10 × the attempts
    on_cost = metrics.pools_reach([(1000, 100)], 0.5, cost_per_attempt=[10.0])
    assert (on_cost.estimate, on_cost.low, on_cost.high) == pytest.approx((reach.estimate * 10, reach.low * 10, reach.high * 10))
    # two pools: the mean curve; one without passes caps the lower curve at 1/2
    two = metrics.pools_reach([(1000, 100), (1000, 0)], 0.4)
    assert two.high is not None and metrics.pools_reach([(1000, 100), (1000, 0)], 0.6).high is None


def test_ratio_interval_from_interval_ends():
    base = metrics.Reach(estimate=40, low=20, high=80)
    method = metrics.Reach(estimate=10, low=5, high=None)
    assert metrics.ratio_interval(base, method) == metrics.RatioInterval(estimate=4.0, low=0.0, high=16.0)
    assert metrics.ratio_interval(metrics.Reach(estimate=40, low=20, high=None), metrics.Reach(estimate=10, low=5, high=20)).high is None


def test_ratio_interval_coverage_by_simulation():
    """sdpo-like runs at twice best-of-k's rate vs a pool: the 90% interval of the attempts ratio at
    p = 0.5 (each side's band at 95%) covers the true ratio of quantiles."""
    assert interval_coverage.ratio_coverage(reps=200, seed=12) >= 0.9


def test_exposure_skips_the_shared_first_batch():
    obs = [found(3), found(20), censored(64)]
    assert metrics.exposure(obs) == metrics.Exposure(discoveries=2, attempts=87)
    assert metrics.exposure(obs, skip=16) == metrics.Exposure(discoveries=1, attempts=4 + 48)


def test_rate_ratio_one_problem_hand_computed():
    # 2 discoveries in 100 attempts vs 3 passes in 300 samples: θ̂ = (2/100) / (3/300) = 2;
    # given 5 events, O ~ Bin(5, 100/400) under θ = 1: p = 2 P(O >= 2) = 2 (1 - 0.75^5 - 5 · 0.25 · 0.75^4)
    result = metrics.rate_ratio([metrics.RateStratum(discoveries=2, attempts=100, baseline_passes=3, baseline_samples=300)])
    assert result.estimate == pytest.approx(2.0)
    assert result.p_value == pytest.approx(2 * (1 - 0.75**5 - 5 * 0.25 * 0.75**4))
    assert (result.observed, result.expected, result.strata) == (2, pytest.approx(1.0), 1)
    share = lambda theta: theta * 100 / (theta * 100 + 300)  # noqa: E731
    assert binomial_tail(5, share(result.low), 2) == pytest.approx(0.05, abs=1e-6)
    assert 1 - binomial_tail(5, share(result.high), 3) == pytest.approx(0.05, abs=1e-6)


def test_rate_ratio_edges_and_strata():
    none = metrics.rate_ratio([metrics.RateStratum(discoveries=0, attempts=64, baseline_passes=0, baseline_samples=256)])
    assert none.estimate is None and none.strata == 0 and none.p_value == 1.0
    zero = metrics.rate_ratio([metrics.RateStratum(discoveries=0, attempts=100, baseline_passes=4, baseline_samples=100)])
    assert zero.estimate == 0.0 and zero.low == 0.0 and zero.high is not None
    only = metrics.rate_ratio([metrics.RateStratum(discoveries=3, attempts=100, baseline_passes=0, baseline_samples=100)])
    assert only.estimate is None and only.high is None and only.low > 0
    # two problems: the MLE solves Σ n_p π_p(θ) = S
    strata = [metrics.RateStratum(discoveries=2, attempts=100, baseline_passes=1, baseline_samples=400),
              metrics.RateStratum(discoveries=1, attempts=50, baseline_passes=6, baseline_samples=300)]
    theta = metrics.rate_ratio(strata).estimate
    assert 3 * theta * 100 / (theta * 100 + 400) + 7 * theta * 50 / (theta * 50 + 300) == pytest.approx(3)


def test_rate_ratio_test_size_and_interval_coverage_by_simulation():
    """Under θ = 1 (Bernoulli attempts, not Poisson) the test rejects at most ~α; at θ = 2 the 90%
    interval covers 2 in at least 85% of repetitions and the test rejects more often."""
    null_rejects, null_covers = interval_coverage.rate_ratio_behaviour(1.0, reps=250, seed=21)
    assert null_rejects <= 0.12 and null_covers >= 0.88
    rejects, covers = interval_coverage.rate_ratio_behaviour(2.0, reps=250, seed=22)
    assert covers >= 0.85 and rejects > null_rejects


def test_compute_units_weights():
    assert metrics.compute_units(100) == 100
    assert metrics.compute_units(100, scored_tokens=300, trained_tokens=50) == 100 + 300 + 2 * 50

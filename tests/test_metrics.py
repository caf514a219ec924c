import math
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


def test_pass_at_k_from_pooled_best_of_k_runs_estimates_the_geometric_curve():
    rng = np.random.default_rng(5)
    p, budget = 0.05, 40
    observations = [found(int(t)) if t <= budget else censored(budget) for t in rng.geometric(p, size=600)]
    n, c = metrics.sample_counts(observations)
    assert c / n == pytest.approx(p, rel=0.15)
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
    curve = metrics.split_curve([easy, hard], 3)
    np.testing.assert_allclose(curve, [0.5, 0.5, 0.5])


def test_bootstrap_band_contains_estimate_and_shrinks_with_more_seeds():
    rng = np.random.default_rng(2)
    few = [[found(int(t)) if t <= 20 else censored(20) for t in rng.geometric(0.15, size=5)]]
    many = [[found(int(t)) if t <= 20 else censored(20) for t in rng.geometric(0.15, size=200)]]
    band_few = metrics.bootstrap_band(few, 20, resamples=300)
    band_many = metrics.bootstrap_band(many, 20, resamples=300)
    for band in (band_few, band_many):
        for est, lo, hi in zip(band.estimate, band.low, band.high):
            assert lo - 1e-9 <= est <= hi + 1e-9
    width = lambda b: np.mean([h - l for l, h in zip(b.low, b.high)])  # noqa: E731
    assert width(band_many) < width(band_few) / 2


def test_bootstrap_coverage_of_geometric_truth():
    """The 90% band covers the true F(k) in most repetitions (a loose check: 60%+)."""
    rng = np.random.default_rng(9)
    p, k = 0.2, 5
    truth = 1 - (1 - p) ** k
    covered = 0
    for rep in range(40):
        obs = [[found(int(t)) if t <= 10 else censored(10) for t in rng.geometric(p, size=30)]]
        band = metrics.bootstrap_band(obs, 10, resamples=200, seed=rep)
        covered += band.low[k - 1] <= truth <= band.high[k - 1]
    assert covered >= 30


def test_bootstrap_over_problems_widens_for_heterogeneous_problems():
    same = [[found(2)] * 5, [found(2)] * 5]
    mixed = [[found(1)] * 5, [censored(4)] * 5]
    band_same = metrics.bootstrap_band(same, 4, resamples=300)
    band_mixed = metrics.bootstrap_band(mixed, 4, resamples=300)
    assert band_same.low[1] == band_same.high[1] == 1.0
    assert band_mixed.estimate[0] == 0.5
    assert band_mixed.low[0] == 0.0 and band_mixed.high[0] == 1.0  # resampling problems: all-easy or all-hard

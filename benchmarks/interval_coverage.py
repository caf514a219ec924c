"""Coverage of ttsd.metrics' 90% intervals by simulation: prints one table per interval.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/interval_coverage.py [--reps 4000]

Truth: geometric discovery times with per-attempt rate p (sequential methods), Binomial pools
(best-of-k). tests/test_metrics.py runs the same simulations with fewer repetitions."""

from __future__ import annotations

import argparse
import math

import numpy as np

from ttsd import metrics

RATES = (0.01, 0.03, 0.1, 0.3)
KS = (1, 4, 16, 64)
SEEDS = (3, 5, 10)


def observations(times: np.ndarray, budgets: np.ndarray) -> list[metrics.Observation]:
    return [metrics.Observation(time=int(min(t, b)), discovered=bool(t <= b)) for t, b in zip(times, budgets)]


def sequential_coverage(rate: float, seeds: int, ks=KS, reps: int = 1000, budget: int = 64, censoring: bool = False,
                        seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(coverage, mean width) per k of `sequential_band` at 90%. `censoring`: budgets drawn
    uniformly from [budget/4, budget] per run (unequal budgets censor runs before k)."""
    rng = np.random.default_rng(seed)
    truth = metrics.geometric_curve(rate, np.array(ks))
    covered = np.zeros(len(ks))
    width = np.zeros(len(ks))
    for _ in range(reps):
        times = rng.geometric(rate, size=seeds)
        budgets = rng.integers(budget // 4, budget + 1, size=seeds) if censoring else np.full(seeds, budget)
        band = metrics.sequential_band(observations(times, budgets), ks)
        low = np.array([0.0 if v is None else v for v in band.low])
        high = np.array([1.0 if v is None else v for v in band.high])
        covered += (low <= truth + 1e-12) & (truth <= high + 1e-12)
        width += high - low
    return covered / reps, width / reps


def split_coverage(rates: tuple[float, ...], seeds: int, ks=KS, reps: int = 1000, budget: int = 64, seed: int = 0) -> np.ndarray:
    """coverage per k of `split_band` (the mean over problems with different rates) at 90%."""
    rng = np.random.default_rng(seed)
    truth = np.mean([metrics.geometric_curve(r, np.array(ks)) for r in rates], axis=0)
    covered = np.zeros(len(ks))
    for _ in range(reps):
        per_problem = [observations(rng.geometric(r, size=seeds), np.full(seeds, budget)) for r in rates]
        band = metrics.split_band(per_problem, ks)
        covered += (np.array(band.low) <= truth + 1e-12) & (truth <= np.array(band.high) + 1e-12)
    return covered / reps


def population_coverage(problems: int, seeds: int, beta: tuple[float, float], ks=(4, 16, 64), reps: int = 1000,
                        budget: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(coverage of `population_band`, coverage of `split_band`) per k of the mean discovery curve
    of a *population* of problems whose rates are Beta(a, b), from `problems` drawn ones."""
    rng = np.random.default_rng(seed)
    ks = np.array(ks)
    population = rng.beta(*beta, size=200_000)
    truth = np.array([np.mean(1 - (1 - population) ** k) for k in ks])
    covered_population, covered_fixed = np.zeros(len(ks)), np.zeros(len(ks))
    for _ in range(reps):
        rates = np.maximum(rng.beta(*beta, size=problems), 1e-12)
        per_problem = [observations(rng.geometric(r, size=seeds), np.full(seeds, budget)) for r in rates]
        fixed = metrics.split_band(per_problem, ks)
        band = metrics.population_band([metrics.kaplan_meier_at(obs, ks) for obs in per_problem], fixed)
        covered_population += (np.array(band.low) <= truth + 1e-12) & (truth <= np.array(band.high) + 1e-12)
        covered_fixed += (np.array(fixed.low) <= truth + 1e-12) & (truth <= np.array(fixed.high) + 1e-12)
    return covered_population / reps, covered_fixed / reps


def rate_ratio_study(rng: np.random.Generator, theta: float, rates=(0.02, 0.08), seeds: int = 5, budget: int = 64,
                     pool: int = 256, batch: int = 16) -> metrics.RateRatio:
    """One simulated study: per problem, `seeds` runs whose hazard is best-of-k's rate for the first
    `batch` attempts and θ × rate after (Bernoulli attempts), censored at `budget`, and a pool."""
    strata = []
    for rate in rates:
        first = rng.geometric(rate, size=seeds)
        times = np.where(first <= batch, first, batch + rng.geometric(min(theta * rate, 1.0), size=seeds))
        e = metrics.exposure(observations(times, np.full(seeds, budget)), batch)
        strata.append(metrics.RateStratum(discoveries=e.discoveries, attempts=e.attempts,
                                          baseline_passes=int(rng.binomial(pool, rate)), baseline_samples=pool))
    return metrics.rate_ratio(strata)


def rate_ratio_behaviour(theta: float, reps: int = 1000, seed: int = 0, **design) -> tuple[float, float]:
    """(rejection rate of θ = 1 at α = 0.10, coverage of θ by the 90% interval)."""
    rng = np.random.default_rng(seed)
    results = [rate_ratio_study(rng, theta, **design) for _ in range(reps)]
    rejected = np.mean([r.p_value < 0.1 for r in results])
    covered = np.mean([r.low <= theta and (r.high is None or theta <= r.high) for r in results])
    return float(rejected), float(covered)


def ratio_coverage(rate: float = 0.05, speedup: float = 2.0, seeds: int = 5, budget: int = 64, pool: int = 256,
                   probability: float = 0.5, reps: int = 1000, seed: int = 0) -> float:
    """Coverage of the 90% attempts-ratio interval at a fixed p (each side at 95%): geometric runs
    at `speedup` × the rate against a pool at the rate; truth = the ratio of the two quantiles."""
    rng = np.random.default_rng(seed)
    truth = (math.ceil(math.log1p(-probability) / math.log1p(-rate))
             / math.ceil(math.log1p(-probability) / math.log1p(-speedup * rate)))
    points = np.arange(1, budget + 1)
    covered = 0
    for _ in range(reps):
        obs = observations(rng.geometric(speedup * rate, size=seeds), np.full(seeds, budget))
        method = metrics.reach_interval(points, metrics.sequential_band(obs, points, 0.95), probability)
        base = metrics.pools_reach([(pool, int(rng.binomial(pool, rate)))], probability, 0.95)
        interval = metrics.ratio_interval(base, method)
        covered += interval.low <= truth and (interval.high is None or truth <= interval.high)
    return covered / reps


def mid_p_interval(x: int, n: int, confidence: float = 0.9) -> tuple[float, float]:
    """The mid-p binomial interval (for comparison only: compare uses Clopper–Pearson). Ends solve
    P(X > x) + P(X = x)/2 = α/2 and P(X < x) + P(X = x)/2 = α/2."""
    alpha = (1 - confidence) / 2

    def above(p: float) -> float:  # P(X > x) + P(X = x) / 2 = (P(X >= x) + P(X >= x + 1)) / 2
        at_least = 1.0 if x == 0 else metrics.regularized_beta(p, x, n - x + 1)
        beyond = 0.0 if x == n else metrics.regularized_beta(p, x + 1, n - x)
        return (at_least + beyond) / 2

    def solve(target: float, rising: bool) -> float:
        low, high = 0.0, 1.0
        for _ in range(60):
            mid = (low + high) / 2
            if (above(mid) < target) == rising:
                low = mid
            else:
                high = mid
        return (low + high) / 2

    return (0.0 if x == 0 else solve(alpha, True)), (1.0 if x == n else solve(1 - alpha, True))


def exact_coverage(interval, n: int, grid: int = 999) -> tuple[float, float]:
    """(minimum, mean) over F on a uniform grid of (0, 1) of Σ_x Binomial(x; n, F) · 1[F ∈ interval(x)]:
    the exact coverage of a binomial interval with n runs (no simulation)."""
    ends = [interval(x, n) for x in range(n + 1)]
    values = []
    for f in np.linspace(0.001, 0.999, grid):
        values.append(sum(math.comb(n, x) * f**x * (1 - f) ** (n - x) for x, (lo, hi) in enumerate(ends) if lo <= f <= hi))
    return min(values), float(np.mean(values))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=4000)
    args = parser.parse_args()
    print("exact coverage of 90% binomial intervals over F in (0, 1): minimum, mean")
    for seeds in SEEDS:
        cp = exact_coverage(lambda x, n: metrics.clopper_pearson(x, n), seeds)
        mid = exact_coverage(mid_p_interval, seeds)
        print(f"{seeds:5d} runs  Clopper–Pearson {cp[0]:.3f} {cp[1]:.3f}   mid-p {mid[0]:.3f} {mid[1]:.3f}")
    print(f"\nsequential_band, 90%, budget 64, no censoring before k ({args.reps} repetitions per row)")
    print("seeds  rate  " + "  ".join(f"cov@{k:<3d} width@{k:<3d}" for k in KS))
    for seeds in SEEDS:
        for rate in RATES:
            cov, width = sequential_coverage(rate, seeds, reps=args.reps)
            print(f"{seeds:5d}  {rate:4.2f}  " + "  ".join(f"{c:7.3f} {w:9.3f}" for c, w in zip(cov, width)))
    print("\nsequential_band, 90%, unequal budgets in [16, 64] (runs censored before k)")
    for seeds in SEEDS:
        for rate in (0.03, 0.1):
            cov, _ = sequential_coverage(rate, seeds, reps=args.reps, censoring=True)
            print(f"{seeds:5d}  {rate:4.2f}  " + "  ".join(f"{c:7.3f}" for c in cov))
    print("\nsplit_band, 90%, mean over problems with rates (0.01, 0.1) and (0.01, 0.03, 0.1, 0.3)")
    for rates in ((0.01, 0.1), (0.01, 0.03, 0.1, 0.3)):
        for seeds in SEEDS:
            cov = split_coverage(rates, seeds, reps=args.reps)
            print(f"{seeds:5d}  {rates}  " + "  ".join(f"{c:7.3f}" for c in cov))
    print("\npopulation_band vs split_band as intervals for the mean over a population of problems, rates ~ Beta(a, b), k = 4, 16, 64")
    for beta in ((0.5, 10.0), (2.0, 30.0)):
        for problems in (3, 5, 10):
            for seeds in (3, 5):
                pop, fixed = population_coverage(problems, seeds, beta, reps=args.reps // 2)
                print(f"Beta{beta}  {problems:2d} problems  {seeds} seeds  population " + " ".join(f"{c:.3f}" for c in pop)
                      + "   fixed-problem " + " ".join(f"{c:.3f}" for c in fixed))
    print("\nrate_ratio, rates (0.02, 0.08), 5 seeds, budget 64, batch 16 skipped, pool 256: rejection at α = 0.10, 90% coverage")
    for theta in (1.0, 2.0, 4.0):
        rejected, covered = rate_ratio_behaviour(theta, reps=args.reps)
        print(f"θ = {theta:3.1f}  rejects {rejected:.3f}  covers {covered:.3f}")
    print("\nattempts ratio at p = 0.5, rate 0.05 vs 2 × 0.05, 5 seeds, budget 64, pool 256: 90% coverage")
    print(f"covers {ratio_coverage(reps=args.reps):.3f}")


if __name__ == "__main__":
    main()

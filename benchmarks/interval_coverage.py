"""Coverage of ttsd.metrics' 90% intervals by simulation: prints one table per interval.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/interval_coverage.py [--reps 4000]

Truth: geometric discovery times with per-attempt rate p (sequential methods), Binomial pools
(best-of-k). tests/test_metrics.py runs the same simulations with fewer repetitions."""

from __future__ import annotations

import argparse

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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=4000)
    args = parser.parse_args()
    print(f"sequential_band, 90%, budget 64, no censoring before k ({args.reps} repetitions per row)")
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


if __name__ == "__main__":
    main()

"""discovery@k, pass@k, bootstrap confidence intervals, attempts to discovery (pure math, numpy only).

Notation. A run of a method on a problem with seed s makes attempts 1, 2, 3, ... until one passes
(discovery at time T_s) or the budget B_s is spent. A run that ran out of budget is *right-censored*
at C_s = attempts_used: we know T_s > C_s and nothing more.

discovery@k is the probability that a run discovers within k attempts, F(k) = P(T <= k).

Censoring (our choice): the Kaplan–Meier estimator, evaluated on the integer attempt grid,

    F̂(k) = 1 - Π_{j <= k} (1 - d_j / n_j),

where d_j = number of runs that discovered at attempt j and n_j = number of runs still "at risk"
at j (T_s >= j and, for censored runs, C_s >= j). With no censoring before k it reduces to the
plain empirical fraction #{s : T_s <= k} / S. Beyond the largest observed time, F̂ is undefined
(NaN) if that last run was censored, and stays constant if it was a discovery (every run is then
accounted for). With equal budgets for every seed this is exactly "the empirical fraction,
defined up to the budget".
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel

DEFAULT_CONFIDENCE = 0.90
DEFAULT_BOOTSTRAP = 1000


class Observation(BaseModel):
    """One sequential run: `time` is the discovery attempt if `discovered`, else the censoring time."""

    time: int
    discovered: bool


def kaplan_meier_discovery(observations: Sequence[Observation], max_k: int) -> np.ndarray:
    """F̂(k) for k = 1..max_k (array index k-1); NaN where undefined (see module docstring).

        F̂(k) = 1 - Π_{j<=k} (1 - d_j / n_j),   n_j = #{s : time_s >= j}
    """
    if not observations or max_k <= 0:
        return np.full(max(max_k, 0), np.nan)
    times = np.array([o.time for o in observations], dtype=int)
    events = np.array([o.discovered for o in observations], dtype=bool)
    grid = np.arange(1, max_k + 1)
    at_risk = np.sum(times[None, :] >= grid[:, None], axis=1)
    discovered_at = np.sum(events[None, :] & (times[None, :] == grid[:, None]), axis=1)
    hazard = np.divide(discovered_at, at_risk, out=np.zeros(max_k), where=at_risk > 0)
    survival = np.cumprod(1.0 - hazard)
    curve = 1.0 - survival
    # Once no run is at risk, F̂ is known only if the last unknown was resolved by a discovery
    # (survival reached 0) or no run was censored at all.
    censored_before = np.sum((~events)[None, :] & (times[None, :] < grid[:, None]), axis=1) > 0
    unknown = (at_risk == 0) & censored_before & (survival > 0)
    curve[unknown] = np.nan
    return curve


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n independent samples of which c passed (Chen et al. 2021):

        pass@k = 1 - C(n-c, k) / C(n, k) = 1 - Π_{i=n-c+1}^{n} (1 - k / i)

    (the product form avoids huge binomials). 1 when n - c < k; requires 0 <= c <= n and k <= n.
    """
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got n={n}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def pass_at_k_curve(n: int, c: int, max_k: int) -> np.ndarray:
    """pass@k for k = 1..max_k (index k-1); NaN for k > n."""
    return np.array([pass_at_k(n, c, k) if k <= n else np.nan for k in range(1, max_k + 1)])


def sample_counts(observations: Sequence[Observation]) -> tuple[int, int]:
    """(n, c) pooled from best-of-k runs: a discovered run contributes T-1 failures and one success,
    a censored one C failures. Each attempt is an independent sample of the unchanged model, so
    c / n is the per-sample success rate (the geometric MLE despite the optional stopping)."""
    n = sum(o.time for o in observations)
    c = sum(1 for o in observations if o.discovered)
    return n, c


def restricted_mean_attempts(curve: np.ndarray, horizon: int | None = None) -> float:
    """Restricted mean attempts to first discovery, E[min(T, τ)] with τ = horizon (default: the
    length of the defined curve). For integer T >= 1:

        E[min(T, τ)] = Σ_{k=0}^{τ-1} P(T > k) = 1 + Σ_{k=1}^{τ-1} (1 - F(k))

    Runs that never discover count as τ; so the value is a lower bound on the true mean when F(τ) < 1.
    NaN if the curve is undefined before τ.
    """
    tau = defined_length(curve) if horizon is None else horizon
    if tau <= 0 or tau > len(curve) or np.any(np.isnan(curve[: tau - 1])):
        return math.nan
    return float(1.0 + np.sum(1.0 - curve[: tau - 1]))


def defined_length(curve: np.ndarray) -> int:
    """Number of leading k for which the curve is defined (not NaN)."""
    undefined = np.flatnonzero(np.isnan(curve))
    return int(undefined[0]) if undefined.size else len(curve)


def attempts_to_reach(curve: np.ndarray, probability: float) -> int | None:
    """Smallest k with F(k) >= p ("attempts needed to reach discovery probability p"); None if the
    defined part of the curve never reaches p."""
    reached = np.flatnonzero(np.nan_to_num(curve, nan=-1.0) >= probability - 1e-12)
    return int(reached[0]) + 1 if reached.size else None


def attempts_ratio(baseline: np.ndarray, method: np.ndarray, probability: float) -> float | None:
    """k_baseline(p) / k_method(p): how many times more attempts the baseline needs to reach the
    same discovery probability p (> 1 means the method is more attempt-efficient). None if either
    curve never reaches p."""
    k_base = attempts_to_reach(baseline, probability)
    k_method = attempts_to_reach(method, probability)
    if k_base is None or k_method is None:
        return None
    return k_base / k_method


def matched_probability(curves: Sequence[np.ndarray]) -> float | None:
    """The largest discovery probability that every curve reaches (the natural p for a ratio):
    min over curves of max F; None if some curve never discovers."""
    peaks = [float(np.nanmax(c)) if np.any(~np.isnan(c)) else 0.0 for c in curves]
    best = min(peaks) if peaks else 0.0
    return best if best > 0 else None


class Band(BaseModel):
    """A curve with its bootstrap confidence band (lists, index k-1; None where undefined)."""

    estimate: list[float | None]
    low: list[float | None]
    high: list[float | None]


def _listed(values: np.ndarray) -> list[float | None]:
    return [None if math.isnan(v) else float(v) for v in values]


def split_curve(per_problem: Sequence[Sequence[Observation]], max_k: int) -> np.ndarray:
    """discovery@k of a split: the mean over problems of each problem's Kaplan–Meier F̂(k),

        F̂_split(k) = (1/P) Σ_p F̂_p(k)

    (each problem weighs the same, whatever its number of seeds); NaN where any problem's is."""
    curves = [kaplan_meier_discovery(obs, max_k) for obs in per_problem]
    if not curves:
        return np.full(max_k, np.nan)
    return np.mean(np.stack(curves), axis=0)


def bootstrap_band(
    per_problem: Sequence[Sequence[Observation]],
    max_k: int,
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    resamples: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
) -> Band:
    """Percentile bootstrap band of the (split) discovery@k curve.

    Two-stage resampling: draw P problems with replacement, then for each drawn problem draw its
    seeds with replacement, and recompute F̂_split. The band is the [(1-c)/2, (1+c)/2] percentiles
    of the resampled curves at each k (90% by default). With a single problem this is the ordinary
    bootstrap over seeds. A k where more than half of the resamples are undefined gets no band.
    """
    estimate = split_curve(per_problem, max_k)
    rng = np.random.default_rng(seed)
    problems = [list(obs) for obs in per_problem if obs]
    if not problems:
        empty = _listed(np.full(max_k, np.nan))
        return Band(estimate=empty, low=empty, high=empty)
    draws = np.empty((resamples, max_k))
    for r in range(resamples):
        chosen = rng.integers(0, len(problems), size=len(problems)) if len(problems) > 1 else [0]
        resampled = []
        for p in chosen:
            seeds = problems[p]
            picks = rng.integers(0, len(seeds), size=len(seeds))
            resampled.append([seeds[i] for i in picks])
        draws[r] = split_curve(resampled, max_k)
    alpha = (1.0 - confidence) / 2.0
    low = np.full(max_k, np.nan)
    high = np.full(max_k, np.nan)
    for k in range(max_k):
        column = draws[:, k]
        column = column[~np.isnan(column)]
        if column.size * 2 > resamples:
            low[k] = np.quantile(column, alpha)
            high[k] = np.quantile(column, 1.0 - alpha)
    return Band(estimate=_listed(estimate), low=_listed(low), high=_listed(high))

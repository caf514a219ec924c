"""discovery@k, pass@k, exact intervals, attempts ratios, rate ratios, compute (pure math, numpy only).

Notation. A run of a sequential method (sdpo, multi-turn) on a problem with seed s makes attempts
1, 2, 3, ... until one passes (discovery at time T_s) or the budget B_s is spent. A run that ran out
of budget is *right-censored* at C_s = attempts_used: we know T_s > C_s and nothing more. "Time" may
also be cumulative compute or wall seconds at an attempt (the compute-matched axes): every function
below that takes `points` works on any such axis.

discovery@k is the probability that a run discovers within k attempts, F(k) = P(T <= k).

Point estimate: the Kaplan–Meier estimator

    F̂(x) = 1 - Π_{event times t <= x} (1 - d_t / n_t),

d_t = runs that discovered at t, n_t = runs still "at risk" at t (time_s >= t). With no censoring
before x it is the plain fraction #{s : T_s <= x} / S. Beyond the largest observed time F̂ is
undefined (NaN) if that last run was censored, and stays constant if it was a discovery.

Intervals (`sequential_band`, per problem). With no run censored before x, the number of runs that
discovered by x is Binomial(S, F(x)) and the exact Clopper–Pearson interval applies. With m runs
censored before x, the discoveries we would have seen had they gone on to x lie in [d, d + m]; the
interval [CP_low(d, S), CP_high(d + m, S)] contains the Clopper–Pearson interval of the unseen full
data, so its coverage is at least the nominal one whatever the censoring mechanism (conservative).
Clopper–Pearson never gives a zero-width interval: 0/3 at 90% is [0, 0.63], 2/3 is [0.14, 0.98].

best-of-k from i.i.d. samples (`pool_band`): N attempts of the unchanged model with c passes. F(k)
= 1 - (1 - p)^k exactly; the unbiased estimator is pass@k = 1 - C(N - c, k) / C(N, k) (k <= N; see
`pool_estimate` beyond), the interval the Clopper–Pearson interval of p mapped through the
monotone map p -> 1 - (1 - p)^k (exact).

Across problems (`split_band`, `pools_band`): the estimate is the mean of the per-problem
estimates (every problem weighs the same). The interval is for the mean over *these* problems (fixed
problems: it holds seed-to-seed and sample-to-sample noise, not problem-to-problem variation, so it
says nothing about problems outside the scope). See those functions for the constructions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from pydantic import BaseModel

DEFAULT_CONFIDENCE = 0.90


class Observation(BaseModel):
    """One sequential run: `time` is the discovery time if `discovered`, else the censoring time
    (attempts, or cumulative compute / wall seconds on those axes)."""

    time: float
    discovered: bool


# ----- exact binomial intervals ------------------------------------------------------------------


def _beta_continued_fraction(x: float, a: float, b: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz; Numerical Recipes 6.4)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 20000):
        for numerator in (m * (b - m) * x / ((a - 1.0 + 2 * m) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 1.0 + 2 * m))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def regularized_beta(x: float, a: float, b: float) -> float:
    """I_x(a, b) = B(x; a, b) / B(a, b), the Beta(a, b) distribution function (a, b > 0). For integer
    a = j, b = n - j + 1 it equals P(Binomial(n, x) >= j)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(x, a, b) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(1.0 - x, b, a) / b


def beta_quantile(q: float, a: float, b: float) -> float:
    """The x with I_x(a, b) = q (bisection: I_x is increasing in x)."""
    low, high = 0.0, 1.0
    for _ in range(80):
        mid = (low + high) / 2.0
        if regularized_beta(mid, a, b) < q:
            low = mid
        else:
            high = mid
    return (low + high) / 2.0


@lru_cache(maxsize=65536)
def clopper_pearson(successes: float, trials: float, confidence: float = DEFAULT_CONFIDENCE) -> tuple[float, float]:
    """The exact (Clopper–Pearson) two-sided interval for a binomial proportion, α = 1 - confidence:

        low  = Beta⁻¹(α/2; x, n - x + 1)      (0 when x = 0)
        high = Beta⁻¹(1 - α/2; x + 1, n - x)  (1 when x = n)

    i.e. low solves P(X >= x | low) = α/2 and high solves P(X <= x | high) = α/2. Coverage is at
    least `confidence` for every p (conservative: discreteness makes it higher at small n). `x`
    and `n` may be fractional (an effective count, see `split_band`): the Beta form is used as is.
    """
    if trials <= 0:
        return 0.0, 1.0
    if not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials, got {successes}, {trials}")
    alpha = 1.0 - confidence
    low = 0.0 if successes <= 0 else beta_quantile(alpha / 2.0, successes, trials - successes + 1.0)
    high = 1.0 if successes >= trials else beta_quantile(1.0 - alpha / 2.0, successes + 1.0, trials - successes)
    return low, high


# ----- Kaplan–Meier ------------------------------------------------------------------------------


def _arrays(observations: Sequence[Observation]) -> tuple[np.ndarray, np.ndarray]:
    return (np.array([o.time for o in observations], dtype=float), np.array([o.discovered for o in observations], dtype=bool))


def kaplan_meier_at(observations: Sequence[Observation], points: Sequence[float]) -> np.ndarray:
    """F̂(x) at each x of `points`; NaN where undefined (see module docstring).

        F̂(x) = 1 - Π_{t <= x} (1 - d_t / n_t),   n_t = #{s : time_s >= t}
    """
    points = np.asarray(points, dtype=float)
    if not observations:
        return np.full(points.shape, np.nan)
    times, events = _arrays(observations)
    event_times = np.unique(times[events])
    at_risk = np.array([np.sum(times >= t) for t in event_times])
    discovered_at = np.array([np.sum(events & (times == t)) for t in event_times])
    survival_after = np.cumprod(1.0 - discovered_at / np.maximum(at_risk, 1))
    index = np.searchsorted(event_times, points, side="right")
    survival = np.where(index > 0, survival_after[np.maximum(index - 1, 0)] if event_times.size else 1.0, 1.0)
    curve = 1.0 - survival
    # Once no run is at risk, F̂ is known only if the last unknown was resolved by a discovery
    # (survival reached 0) or no run was censored before.
    nobody_at_risk = np.array([np.sum(times >= x) == 0 for x in points])
    censored_before = np.array([np.any(~events & (times < x)) for x in points])
    curve[nobody_at_risk & censored_before & (survival > 0)] = np.nan
    return curve


def kaplan_meier_discovery(observations: Sequence[Observation], max_k: int) -> np.ndarray:
    """F̂(k) for k = 1..max_k (array index k-1): `kaplan_meier_at` on the attempt grid."""
    return kaplan_meier_at(observations, np.arange(1, max(max_k, 0) + 1))


def discovery_counts(observations: Sequence[Observation], points: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """(d, m) at each x: d(x) = runs that discovered at or before x, m(x) = runs censored before x
    (their outcome at x is unknown; a run censored exactly at x is known not to have discovered)."""
    points = np.asarray(points, dtype=float)
    times, events = _arrays(observations)
    discovered = np.array([np.sum(events & (times <= x)) for x in points], dtype=int)
    censored = np.array([np.sum(~events & (times < x)) for x in points], dtype=int)
    return discovered, censored


class Band(BaseModel):
    """A curve with its pointwise confidence band (lists by point; None where undefined)."""

    estimate: list[float | None]
    low: list[float | None]
    high: list[float | None]


def _listed(values: np.ndarray) -> list[float | None]:
    return [None if math.isnan(v) else float(v) for v in values]


def _band(estimate: np.ndarray, low: np.ndarray, high: np.ndarray) -> Band:
    undefined = np.isnan(estimate)
    low, high = np.where(undefined, np.nan, low), np.where(undefined, np.nan, high)
    return Band(estimate=_listed(estimate), low=_listed(low), high=_listed(high))


def sequential_band(observations: Sequence[Observation], points: Sequence[float], confidence: float = DEFAULT_CONFIDENCE) -> Band:
    """One problem's discovery curve with its exact-or-conservative band (module docstring):

        [CP_low(d(x), S), CP_high(d(x) + m(x), S)]   around the Kaplan–Meier F̂(x)
    """
    return split_band([observations], points, confidence)


def effective_runs(runs_per_problem: Sequence[int]) -> float:
    """n_eff = P² / Σ_p 1/S_p: the number of runs whose plain fraction has the variance of the mean
    of P per-problem fractions with S_p runs each (at a common rate). P·S when every S_p = S."""
    return len(runs_per_problem) ** 2 / sum(1.0 / s for s in runs_per_problem)


def split_band(per_problem: Sequence[Sequence[Observation]], points: Sequence[float], confidence: float = DEFAULT_CONFIDENCE) -> Band:
    """The mean over problems of their discovery curves, with an interval for that mean (fixed problems).

        F̄(x) = (1/P) Σ_p F̂_p(x)
        low(x)  = CP_low (n_eff · (1/P) Σ_p d_p(x) / S_p,          n_eff)
        high(x) = CP_high(n_eff · (1/P) Σ_p (d_p(x) + m_p(x)) / S_p, n_eff)

    With the same S seeds on every problem, n_eff = P·S and this is the Clopper–Pearson interval
    of the pooled count D = Σ d_p out of P·S. D is a sum of independent Bernoulli trials with
    unequal rates F_p(x), whose tails are no heavier than the binomial's with the mean rate
    (Hoeffding 1956), so the interval for the mean rate stays conservative; with unequal S_p the
    effective count is an approximation whose coverage tests/test_metrics.py checks. Censoring is
    handled per problem as in `sequential_band`. With one problem this is `sequential_band`.
    """
    points = np.asarray(points, dtype=float)
    problems = [list(obs) for obs in per_problem if obs]
    if not problems:
        empty = np.full(points.shape, np.nan)
        return _band(empty, empty, empty)
    estimate = np.mean([kaplan_meier_at(obs, points) for obs in problems], axis=0)
    runs = [len(obs) for obs in problems]
    n_eff = effective_runs(runs)
    low_fraction = np.zeros(points.shape)
    high_fraction = np.zeros(points.shape)
    for obs, s in zip(problems, runs):
        discovered, censored = discovery_counts(obs, points)
        low_fraction += discovered / s / len(problems)
        high_fraction += (discovered + censored) / s / len(problems)
    low = np.array([clopper_pearson(_count(f * n_eff, n_eff), n_eff, confidence)[0] for f in low_fraction])
    high = np.array([clopper_pearson(_count(f * n_eff, n_eff), n_eff, confidence)[1] for f in high_fraction])
    return _band(estimate, low, high)


def _count(value: float, trials: float) -> float:
    """A count from a fraction × n, rounded off float noise (so 2/3 · 3 is exactly 2, and the cache hits)."""
    return min(max(round(value, 9), 0.0), trials)


def t_quantile(q: float, dof: float) -> float:
    """The q-quantile (q > 1/2) of Student's t with `dof` degrees of freedom, from
    P(T > t) = I_{ν/(ν+t²)}(ν/2, 1/2) / 2 (bisection)."""
    low, high = 0.0, 1e4
    for _ in range(100):
        mid = (low + high) / 2.0
        if 1.0 - 0.5 * regularized_beta(dof / (dof + mid * mid), dof / 2.0, 0.5) < q:
            low = mid
        else:
            high = mid
    return (low + high) / 2.0


def population_band(estimates: Sequence[np.ndarray], fixed: Band, confidence: float = DEFAULT_CONFIDENCE) -> Band:
    """An interval for the mean discovery curve of *problems like these* (the scope's P problems
    taken as a random sample of a population), around the same estimate F̄ as `fixed`:

        t(x) = F̄(x) ± t_{P-1, (1+c)/2} · sd_p(F̂_p(x)) / √P,   clipped to [0, 1],
        band = [min(t_low, fixed_low), max(t_high, fixed_high)].

    The spread of the per-problem estimates holds both problem-to-problem and seed-to-seed noise;
    the union with the fixed-problem interval keeps it from collapsing when every problem agrees
    (all 0/S). Approximate (per-problem estimates are bounded and skewed): its simulated coverage
    is in docs/statistics.md; compare gives it only from 5 problems on. Needs P >= 2."""
    stacked = np.stack([np.asarray(e, dtype=float) for e in estimates])
    count = stacked.shape[0]
    if count < 2:
        raise ValueError("a population interval needs at least two problems")
    mean = np.mean(stacked, axis=0)
    half = t_quantile((1.0 + confidence) / 2.0, count - 1) * np.std(stacked, axis=0, ddof=1) / math.sqrt(count)
    as_array = lambda values: np.array([np.nan if v is None else v for v in values])  # noqa: E731
    low = np.fmin(np.clip(mean - half, 0.0, 1.0), as_array(fixed.low))
    high = np.fmax(np.clip(mean + half, 0.0, 1.0), as_array(fixed.high))
    return _band(as_array(fixed.estimate), low, high)


# ----- best-of-k from i.i.d. samples -------------------------------------------------------------


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


def pool_estimate(n: int, c: int, k: int) -> float:
    """best-of-k's F(k) from n i.i.d. samples with c passes: the unbiased pass@k for k <= n; beyond
    (no unbiased estimator exists there) the plug-in (maximum-likelihood) 1 - (1 - c/n)^k. The two
    do not join: pass@n is 1 as soon as c >= 1, so pools should be much larger than the k of interest."""
    if n <= 0:
        return math.nan
    return pass_at_k(n, c, k) if k <= n else 1.0 - (1.0 - c / n) ** k


def pass_at_k_curve(n: int, c: int, max_k: int) -> np.ndarray:
    """pass@k for k = 1..max_k (index k-1); NaN for k > n."""
    return np.array([pass_at_k(n, c, k) if k <= n else np.nan for k in range(1, max_k + 1)])


def geometric_curve(rate: float, attempts: np.ndarray) -> np.ndarray:
    """F(k) = 1 - (1 - p)^k: discovery within k i.i.d. attempts of success rate p (k may be 0)."""
    return 1.0 - (1.0 - rate) ** np.asarray(attempts, dtype=float)


def pool_band(samples: int, passes: int, attempts: Sequence[float], confidence: float = DEFAULT_CONFIDENCE) -> Band:
    """best-of-k's curve at k = `attempts` from a pool: `pool_estimate`, with the exact interval
    [1 - (1 - p_low)^k, 1 - (1 - p_high)^k], (p_low, p_high) = Clopper–Pearson(c, N)."""
    return pools_band([(samples, passes)], attempts, confidence)


def pools_band(
    pools: Sequence[tuple[int, int]],
    points: Sequence[float],
    confidence: float = DEFAULT_CONFIDENCE,
    cost_per_attempt: Sequence[float] | None = None,
) -> Band:
    """The mean over problems of best-of-k's curves from their pools (N_p, c_p), with a simultaneous
    (Bonferroni) interval for that mean:

        low(k)  = (1/P) Σ_p 1 - (1 - p_p,low)^k,   high(k) likewise with p_p,high,
        (p_p,low, p_p,high) = Clopper–Pearson(c_p, N_p) at confidence 1 - α/P.

    When all P per-problem intervals cover (probability >= 1 - α), the mean of their ends covers
    the mean of the truths: coverage >= 1 - α, exact and conservative. Pools are large, so the
    Bonferroni widening costs little. `points` are attempts k, or with `cost_per_attempt` (one per
    pool) compute or seconds x, at which pool p has done k = floor(x / cost_p) attempts."""
    points = np.asarray(points, dtype=float)
    kept = [(i, n, c) for i, (n, c) in enumerate(pools) if n > 0]
    if not kept:
        empty = np.full(points.shape, np.nan)
        return _band(empty, empty, empty)
    each = 1.0 - (1.0 - confidence) / len(kept)
    estimate, low, high = np.zeros(points.shape), np.zeros(points.shape), np.zeros(points.shape)
    for i, n, c in kept:
        attempts = np.floor(points / cost_per_attempt[i] + 1e-9) if cost_per_attempt is not None else np.floor(points)
        rate_low, rate_high = clopper_pearson(c, n, each)
        estimate += np.array([pool_estimate(n, c, int(k)) if k >= 1 else 0.0 for k in attempts]) / len(kept)
        low += geometric_curve(rate_low, attempts) / len(kept)
        high += geometric_curve(rate_high, attempts) / len(kept)
    return _band(estimate, low, high)


# ----- curves: horizons, quantiles ---------------------------------------------------------------


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
    """Number of leading points for which the curve is defined (not NaN)."""
    undefined = np.flatnonzero(np.isnan(np.asarray(curve, dtype=float)))
    return int(undefined[0]) if undefined.size else len(curve)


def attempts_to_reach(curve: np.ndarray, probability: float, points: Sequence[float] | None = None) -> float | None:
    """Smallest point x (default: the attempt k = index + 1) with F(x) >= p ("attempts needed to
    reach discovery probability p"); None if the defined part of the curve never reaches p."""
    reached = np.flatnonzero(np.nan_to_num(np.asarray(curve, dtype=float), nan=-1.0) >= probability - 1e-12)
    if not reached.size:
        return None
    return int(reached[0]) + 1 if points is None else float(points[reached[0]])


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


class Reach(BaseModel):
    """Where a curve reaches discovery probability p, with an interval: `low` <= x(p) <= `high`.
    `estimate`/`high` None: not within the points (the budget); `low` is then the last point where
    the band is defined (x(p) lies beyond it)."""

    estimate: float | None
    low: float | None
    high: float | None


def reach_interval(points: Sequence[float], band: Band, probability: float) -> Reach:
    """The interval of x(p) = min{x : F(x) >= p} from a band (test inversion):

        low  = min{x : high(x) >= p},   high = min{x : low(x) >= p}.

    x(p) < low needs high(x(p)) < p <= F(x(p)); x(p) > high needs low(x(p) - 1) >= low(high) >= p
    > F(x(p) - 1): each a miss of the band at one fixed point, so with a band that holds at each
    point with probability 1 - α/2 per side and a `low` that rises with x (Clopper–Pearson of a
    count that only grows does), the interval misses with probability <= α."""
    points = list(points)

    def first(values: list[float | None]) -> float | None:
        return next((x for x, v in zip(points, values) if v is not None and v >= probability - 1e-12), None)

    low = first(band.high)
    if low is None:  # x(p) lies beyond the last point where the band is defined
        low = next((x for x, v in zip(reversed(points), reversed(band.high)) if v is not None), None)
    return Reach(estimate=first(band.estimate), low=low, high=first(band.low))


def pools_reach(
    pools: Sequence[tuple[int, int]],
    probability: float,
    confidence: float = DEFAULT_CONFIDENCE,
    cost_per_attempt: Sequence[float] | None = None,
) -> Reach:
    """x(p) for the mean best-of-k curve of `pools_band` (same Bonferroni interval), not limited to
    any budget: the smallest x where the estimate / the upper / the lower curve reaches p. With
    one pool and no costs, low and high are ⌈log(1 - p) / log(1 - p_high)⌉ and the same with p_low
    (p_low, p_high = Clopper–Pearson(c, N)). `high` is None when the lower curve never gets to p
    (no pass in some pools caps it)."""
    kept = [(i, n, c) for i, (n, c) in enumerate(pools) if n > 0]
    if not kept:
        return Reach(estimate=None, low=None, high=None)
    each = 1.0 - (1.0 - confidence) / len(kept)
    costs = [1.0 if cost_per_attempt is None else float(cost_per_attempt[i]) for i, _, _ in kept]
    bounds = [clopper_pearson(c, n, each) for _, n, c in kept]

    def curve(which: str, x: float) -> float:
        total = 0.0
        for (_, n, c), cost, (rate_low, rate_high) in zip(kept, costs, bounds):
            k = math.floor(x / cost + 1e-9)
            if k < 1:
                continue
            # the estimate's search stays within the pool (pass@k rises to 1 at k = n when c >= 1)
            total += pass_at_k(n, c, min(k, n)) if which == "estimate" else 1.0 - (1.0 - (rate_high if which == "low" else rate_low)) ** k
        return total / len(kept)

    def first(which: str) -> float | None:
        target = probability - 1e-12
        step = min(costs)
        high = step
        while curve(which, high) < target:
            high *= 2
            if high > step * 2**40:
                return None
        low = 0.0
        while high - low > step * 1e-9 and high - low > 1e-12 * high:
            mid = (low + high) / 2
            if curve(which, mid) >= target:
                high = mid
            else:
                low = mid
        # snap to the step where the curve jumped: the smallest k × cost at or below `high`
        return min((math.floor(high / cost + 1e-9) * cost for cost in costs if math.floor(high / cost + 1e-9) >= 1
                    and curve(which, math.floor(high / cost + 1e-9) * cost) >= target), default=high)

    return Reach(estimate=first("estimate"), low=first("low"), high=first("high"))


class RatioInterval(BaseModel):
    """x_baseline(p) / x_method(p) with an interval (None for `high`: unbounded above)."""

    estimate: float | None
    low: float
    high: float | None


def ratio_interval(baseline: Reach, method: Reach) -> RatioInterval:
    """The ratio of two quantiles with the interval from their interval ends:

        [x_base,low / x_method,high,  x_base,high / x_method,low]

    Each Reach at confidence 1 - α/2 (Bonferroni) makes the ratio's coverage >= 1 - α, however the
    two methods depend on each other (sdpo and best-of-k share random streams). Conditional on p:
    the matched probability p* is itself picked from the data, which this does not account for."""
    estimate = baseline.estimate / method.estimate if baseline.estimate and method.estimate else None
    low = baseline.low / method.high if baseline.low and method.high else 0.0
    high = baseline.high / method.low if baseline.high and method.low else None
    return RatioInterval(estimate=estimate, low=low, high=high)


# ----- rate ratio (hazard ratio) against i.i.d. best-of-k ----------------------------------------


class Exposure(BaseModel):
    """Discoveries and attempts at risk of one method's runs on one problem."""

    discoveries: int
    attempts: float


def exposure(observations: Sequence[Observation], skip: int = 0) -> Exposure:
    """Attempts at risk after the first `skip` attempts: a run that discovered at T > skip
    contributes one discovery and T - skip attempts, a censored one C - skip, a run that discovered
    within the first `skip` attempts nothing (it was never at risk afterwards: left truncation).

    Under "the method is best-of-k" every attempt at risk passes with the same p, so the discoveries
    are the events of a process with constant hazard p per attempt at risk."""
    times, events = _arrays(observations)
    discoveries, attempts = exposure_totals(times, events, skip)
    return Exposure(discoveries=discoveries, attempts=attempts)


def exposure_totals(times: np.ndarray, discovered: np.ndarray, skip: int = 0) -> tuple[int, float]:
    """(discoveries, attempts at risk) after the first `skip` attempts, from arrays (see `exposure`)."""
    at_risk = times > skip
    return int(np.sum(discovered & at_risk)), float(np.sum(np.where(at_risk, times - skip, 0.0)))


class RateStratum(BaseModel):
    """One problem: the method's discoveries over its attempts at risk, the baseline's passes over its samples."""

    discoveries: int
    attempts: float
    baseline_passes: int
    baseline_samples: int


class RateRatio(BaseModel):
    """θ = the method's per-attempt discovery hazard / best-of-k's rate, common to the strata."""

    estimate: float | None  # None: undefined (no events); inf is reported as None with `unbounded`
    low: float
    high: float | None  # None: unbounded above
    p_value: float
    observed: int  # Σ discoveries
    expected: float  # Σ attempts × baseline rate (pooled per problem): discoveries expected under θ = 1
    strata: int  # problems with at least one event


@lru_cache(maxsize=4096)
def _log_binomial_coefficients(n: int) -> np.ndarray:
    return np.array([math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) for i in range(n + 1)])


def _binomial_pmf(n: int, prob: float) -> np.ndarray:
    j = np.arange(n + 1)
    if prob <= 0:
        return (j == 0).astype(float)
    if prob >= 1:
        return (j == n).astype(float)
    return np.exp(_log_binomial_coefficients(n) + j * math.log(prob) + (n - j) * math.log1p(-prob))


def _sum_pmf(strata: Sequence[RateStratum], theta: float) -> np.ndarray:
    """pmf of S = Σ_p O_p given every O_p + c_p = n_p, when O_p ~ Bin(n_p, θ E_p / (θ E_p + N_p))."""
    pmf = np.ones(1)
    for s in strata:
        share = theta * s.attempts / (theta * s.attempts + s.baseline_samples) if s.attempts > 0 else 0.0
        pmf = np.convolve(pmf, _binomial_pmf(s.discoveries + s.baseline_passes, share))
    return pmf


def rate_ratio_p_value(strata: Sequence[RateStratum]) -> float:
    """The exact conditional two-sided p-value of θ = 1 (see `rate_ratio`): 2 · min(P_1(S <= s), P_1(S >= s))."""
    used = [s for s in strata if s.discoveries + s.baseline_passes > 0 and s.attempts > 0 and s.baseline_samples > 0]
    if not used:
        return 1.0
    observed = sum(s.discoveries for s in used)
    pmf = _sum_pmf(used, 1.0)
    return min(1.0, 2.0 * min(float(np.sum(pmf[: observed + 1])), float(np.sum(pmf[observed:]))))


def rate_ratio(strata: Sequence[RateStratum], confidence: float = DEFAULT_CONFIDENCE) -> RateRatio:
    """Exact conditional inference on a common rate ratio θ between a method and best-of-k.

    Model: in problem p the method's discoveries O_p ~ Poisson(θ λ_p E_p) over E_p attempts at risk
    and the baseline's passes c_p ~ Poisson(λ_p N_p) over N_p samples (Poisson for Bernoulli
    attempts: exact as p -> 0, the regime of hard problems). Conditional on n_p = O_p + c_p the
    nuisance rates λ_p drop out:

        O_p | n_p ~ Binomial(n_p, π_p(θ)),   π_p(θ) = θ E_p / (θ E_p + N_p),

    and S = Σ_p O_p is sufficient for θ; its distribution is the convolution of those binomials.
    - estimate: the conditional MLE, the θ with Σ_p n_p π_p(θ) = S (one problem: (O/E) / (c/N));
    - interval: θ_low with P_θ(S >= s) = α/2, θ_high with P_θ(S <= s) = α/2 (exact, conservative);
    - p-value of θ = 1: 2 · min(P_1(S <= s), P_1(S >= s)), capped at 1.
    Problems with no event in either method carry no information and drop out.
    """
    used = [s for s in strata if s.discoveries + s.baseline_passes > 0 and s.attempts > 0 and s.baseline_samples > 0]
    observed = sum(s.discoveries for s in used)
    expected = sum(s.attempts * s.baseline_passes / s.baseline_samples for s in used)
    if not used:
        return RateRatio(estimate=None, low=0.0, high=None, p_value=1.0, observed=0, expected=0.0, strata=0)
    total = sum(s.discoveries + s.baseline_passes for s in used)
    alpha = 1.0 - confidence

    def upper_tail(theta: float) -> float:  # P_θ(S >= observed), increasing in θ
        return float(np.sum(_sum_pmf(used, theta)[observed:]))

    def lower_tail(theta: float) -> float:  # P_θ(S <= observed), decreasing in θ
        return float(np.sum(_sum_pmf(used, theta)[: observed + 1]))

    def solve(function, target: float, increasing: bool) -> float:
        low, high = -30.0, 30.0  # log θ
        for _ in range(50):
            mid = (low + high) / 2.0
            if (function(math.exp(mid)) < target) == increasing:
                low = mid
            else:
                high = mid
        return math.exp((low + high) / 2.0)

    def expected_at(theta: float) -> float:
        return sum((s.discoveries + s.baseline_passes) * theta * s.attempts / (theta * s.attempts + s.baseline_samples) for s in used)

    if observed == 0:
        estimate: float | None = 0.0
    elif observed == total:
        estimate = None  # every event is the method's: θ̂ = ∞
    else:
        estimate = solve(expected_at, observed, increasing=True)
    low = 0.0 if observed == 0 else solve(upper_tail, alpha / 2.0, increasing=True)
    high = None if observed == total else solve(lower_tail, alpha / 2.0, increasing=False)
    p_value = rate_ratio_p_value(used)
    return RateRatio(estimate=estimate, low=low, high=high, p_value=p_value, observed=observed, expected=expected, strata=len(used))


# ----- compute ---------------------------------------------------------------------------------

# The compute unit: forward-token equivalents (FTE). One token through one forward pass is 1 FTE
# (≈ 2 × parameters FLOPs); a backward pass costs about twice a forward pass (gradients for both
# activations and weights), so a trained token adds 2 FTE on top of the forward pass that scoring
# counted (AttemptCost.scored_tokens holds every forward pass outside sampling). Sampling a token
# is one forward pass (with a KV cache); prefill of the prompt is not counted (shared by a batch).
COMPUTE_WEIGHTS = {"sampled_tokens": 1.0, "scored_tokens": 1.0, "trained_tokens": 2.0}
COMPUTE_UNIT = "forward-token equivalents (sampled + scored + 2 × trained tokens)"


def compute_units(sampled_tokens: float, scored_tokens: float = 0.0, trained_tokens: float = 0.0) -> float:
    """compute = Σ_kind COMPUTE_WEIGHTS[kind] × tokens of that kind, in forward-token equivalents."""
    return (COMPUTE_WEIGHTS["sampled_tokens"] * sampled_tokens + COMPUTE_WEIGHTS["scored_tokens"] * scored_tokens
            + COMPUTE_WEIGHTS["trained_tokens"] * trained_tokens)

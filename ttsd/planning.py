"""How big a study must be: power of the rate-ratio test by simulation, and the cheapest design (pure math).

The model (the one `ttsd compare` tests, ttsd.metrics.rate_ratio): on problem p best-of-k passes
each attempt with rate r_p, i.i.d.; the method shares best-of-k's first batch of b attempts (the
same initial weights, and in ttsd the same random streams) and afterwards discovers with hazard
θ·r_p per attempt (θ = the effect: 2 means "twice as likely per attempt", about 2× fewer attempts
when b·r_p is small). A study runs S seeds of the method per problem with budget B and a pool of N
i.i.d. best-of-k samples per problem, and tests θ = 1 two-sided at level α on the attempts after
the first batch. Power = P(p-value < α) under θ, estimated by simulating the whole study.

The batch-size ceiling: the method cannot beat best-of-k before it has learned anything, so at
discovery probability q its attempts are at least min(k_b(q), b + 1), where k_b(q) =
⌈log(1 - q) / log(1 - r)⌉ is best-of-k's. The attempts ratio at q is therefore at most
k_b(q) / (b + 1) however large θ is (`attempts_ratio_ceiling`): a 2× reduction at q is
unreachable when k_b(q) < 2(b + 1), i.e. when b·r is large.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel

from ttsd import metrics

DEFAULT_SIMULATIONS = 400
SEED_CHOICES = (3, 5, 10, 20, 40)
BUDGET_BATCHES = (4, 8, 16, 32, 64)  # budgets as multiples of the batch size
POOL_PER_BUDGET = 4  # default pool size: 4 × the budget (issue 18)
FEW_PROBLEMS = 5  # below this, a split says little about problems outside it


def simulate_power(
    rates: Sequence[float],
    *,
    seeds: int,
    budget: int,
    batch: int,
    pool: int,
    effect: float,
    alpha: float,
    simulations: int = DEFAULT_SIMULATIONS,
    seed: int = 0,
) -> float:
    """P(rate-ratio p-value < α) when the method's hazard after the first `batch` attempts is
    `effect` × best-of-k's rate on every problem (module docstring), by `simulations` studies."""
    rng = np.random.default_rng(seed)
    rates = [float(r) for r in rates]
    rejections = 0
    for _ in range(simulations):
        strata = []
        for rate in rates:
            if rate <= 0:
                continue  # never discovers: no information
            first = rng.geometric(rate, size=seeds)
            later = batch + rng.geometric(min(effect * rate, 1.0), size=seeds)
            times = np.where(first <= batch, first, later)
            discovered = times <= budget
            discoveries, attempts = metrics.exposure_totals(np.minimum(times, budget).astype(float), discovered, batch)
            strata.append(metrics.RateStratum(
                discoveries=discoveries, attempts=attempts, baseline_passes=int(rng.binomial(pool, rate)), baseline_samples=pool,
            ))
        rejections += metrics.rate_ratio_p_value(strata) < alpha
    return rejections / simulations


def expected_attempts(rate: float, budget: int, batch: int, effect: float) -> float:
    """E[min(T, B)] of the method's run under the model: Σ_{k=0}^{B-1} P(T > k), with
    P(T > k) = (1 - r)^k for k <= b and (1 - r)^b (1 - θr)^(k - b) after."""
    k = np.arange(budget)
    later = min(effect * rate, 1.0)
    survival = np.where(k <= batch, (1 - rate) ** k, (1 - rate) ** batch * (1 - later) ** np.maximum(k - batch, 0))
    return float(np.sum(survival))


def attempts_ratio_ceiling(rate: float, batch: int, probability: float) -> float | None:
    """The most the attempts ratio at discovery probability q can be with batch b, whatever θ:
    k_b(q) / (b + 1) when best-of-k needs more than b attempts, 1 when it needs at most b (the
    shared first batch gets there for both); None for rate 0."""
    if rate <= 0:
        return None
    k_base = math.ceil(math.log1p(-probability) / math.log1p(-rate) - 1e-9) if rate < 1 else 1
    return k_base / (batch + 1) if k_base > batch else 1.0


class Design(BaseModel):
    problems: int
    seeds: int
    budget: int
    pool: int
    power: float
    method_attempts: float  # expected attempts of the method's runs over the study (under the effect)
    pool_attempts: int
    sampled_tokens: float | None = None  # (method + pool attempts) × tokens per attempt
    seconds: float | None = None  # (method + pool attempts) × seconds per attempt

    @property
    def attempts(self) -> float:
        return self.method_attempts + self.pool_attempts


class Plan(BaseModel):
    effect: float
    power_target: float
    alpha: float
    batch: int
    rates: dict[str, float]
    designs: list[Design]  # every design tried, cheapest first among those reaching the power
    best: Design | None  # the cheapest design with power >= target; None when none does
    warnings: list[str]


def plan_study(
    rates: dict[str, float],
    *,
    effect: float,
    power: float,
    alpha: float,
    batch: int,
    tokens_per_attempt: float | None = None,
    seconds_per_attempt: float | None = None,
    seed_choices: Sequence[int] = SEED_CHOICES,
    budget_batches: Sequence[int] = BUDGET_BATCHES,
    pool_per_budget: int = POOL_PER_BUDGET,
    simulations: int = DEFAULT_SIMULATIONS,
    max_problem_copies: int = 4,
) -> Plan:
    """Search problems × seeds × budget (pool = pool_per_budget × budget) for the cheapest design
    (fewest expected attempts) whose simulated power reaches `power`. More problems than the split
    has are modelled as copies of its rates (1×, 2×, 4× ...: "more problems like these"), flagged
    in the warnings; every design's power uses the same simulation seed (common random numbers,
    so designs compare fairly)."""
    ids = list(rates)
    positive = [rates[i] for i in ids if rates[i] > 0]
    warnings = []
    zero = [i for i in ids if rates[i] <= 0]
    if zero:
        warnings.append(f"{len(zero)} problems have rate 0 ({', '.join(zero[:5])}{'…' if len(zero) > 5 else ''}): they can show no effect and add no power")
    designs: list[Design] = []
    copies_list = [c for c in (1, 2, 4, 8) if c <= max_problem_copies]
    for copies in copies_list:
        problem_rates = positive * copies
        if not problem_rates:
            break
        for seeds in seed_choices:
            for multiple in budget_batches:
                budget = batch * multiple
                pool = pool_per_budget * budget
                achieved = simulate_power(problem_rates, seeds=seeds, budget=budget, batch=batch, pool=pool,
                                          effect=effect, alpha=alpha, simulations=simulations)
                method = seeds * sum(expected_attempts(r, budget, batch, effect) for r in problem_rates) + seeds * budget * len(zero) * copies
                pool_attempts = pool * (len(problem_rates) + len(zero) * copies)
                total = method + pool_attempts
                designs.append(Design(
                    problems=len(ids) * copies, seeds=seeds, budget=budget, pool=pool, power=achieved,
                    method_attempts=method, pool_attempts=pool_attempts,
                    sampled_tokens=total * tokens_per_attempt if tokens_per_attempt else None,
                    seconds=total * seconds_per_attempt if seconds_per_attempt else None,
                ))
        if any(d.power >= power and d.problems == len(ids) * copies for d in designs):
            break  # more problems are not needed
    reaching = sorted((d for d in designs if d.power >= power), key=lambda d: d.attempts)
    best = reaching[0] if reaching else None
    if best is not None and best.problems > len(ids):
        warnings.append(f"the split has {len(ids)} problems; the power needs {best.problems}: the extra problems are assumed to have the same rates")
    if best is None:
        warnings.append(f"no design tried reaches power {power:.0%} (best: {max((d.power for d in designs), default=0):.0%}); "
                        "a larger effect, more problems or a higher α is needed")
    if len(ids) < FEW_PROBLEMS:
        warnings.append(f"only {len(ids)} problems: conclusions are about these problems, not about problems like them "
                        f"(the intervals hold seeds fixed-problem; at least {FEW_PROBLEMS} are needed to say anything about a population)")
    for pid in ids:
        ceiling = attempts_ratio_ceiling(rates[pid], batch, 0.5)
        if ceiling is not None and ceiling < effect:
            warnings.append(
                f"{pid}: with batch {batch} the first {batch} attempts are shared, and best-of-k reaches discovery "
                f"probability 0.5 within {math.ceil(math.log(0.5) / math.log1p(-rates[pid]))} attempts (b·r = {batch * rates[pid]:.2f}): "
                f"the attempts ratio there cannot exceed {ceiling:.2f}, so a {effect:g}× reduction is unreachable; use a smaller batch"
            )
    ordered = reaching + sorted((d for d in designs if d.power < power), key=lambda d: -d.power)
    return Plan(effect=effect, power_target=power, alpha=alpha, batch=batch, rates=rates, designs=ordered, best=best, warnings=warnings)

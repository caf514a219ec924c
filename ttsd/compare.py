"""`ttsd compare`: discovery curves, exact intervals, attempts/compute ratios and a rate-ratio test from a bench.

Per scope (the split: every problem of the bench with runs; and each problem), for each method:
- discovery@k with an exact (Clopper–Pearson) 90% interval (ttsd.metrics): sequential methods
  (sdpo, multi-turn) from their seeded runs, Kaplan–Meier with censored runs bounded both ways;
  best-of-k from i.i.d. samples: the bench's pool (BENCH_DIR/pool) where there is one, else every
  attempt its seeded runs judged (the batch after a discovery included); unbiased pass@k, the
  interval of the per-attempt rate mapped through 1 - (1 - p)^k;
- the restricted mean attempts E[min(T, τ)], τ = the scope's smallest budget;
- the attempts each method needs to reach discovery probabilities p, with intervals;
- for the main method (sdpo) against each baseline: the attempts ratio at the matched discovery
  probability p* (the largest p both reach), k_baseline(p*) / k_sdpo(p*), with a 90% interval
  (each side's band at 95%, Bonferroni); the same on the compute axis (ttsd.metrics.COMPUTE_UNIT)
  and the wall-time axis when every run recorded its per-attempt costs;
- for each sequential method against best-of-k: the rate ratio θ (per-attempt discovery hazard
  over best-of-k's rate) after the method's first batch, exact conditional test and interval,
  stratified by problem, and the power a 2× effect would have had with this design;
- a sentence per scope on what the data can and cannot support;
- the learning diagnostics of ttsd.sdpo.diagnostics pooled over the scope's runs.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from ttsd import metrics, planning
from ttsd.bench import BenchManifest, RunKey, load_manifest, load_pools, load_summaries, run_dir_for
from ttsd.runs import AttemptRecord, PoolSummary, RunDir, Summary

MAIN_METHOD = "sdpo"
BEST_OF_K = "best-of-k"  # independent samples: estimated from a pool (or all its judged attempts)
DEFAULT_KS = (1, 4, 16, 64, 256)
DEFAULT_EFFECT = 2.0
AXES = ("attempts", "compute", "wall")
AXIS_LABELS = {"attempts": "attempts k", "compute": f"compute ({metrics.COMPUTE_UNIT})", "wall": "wall seconds"}
GRID_POINTS = 400  # compute/wall axes: log-spaced evaluation points (plus every observed time)


class Interval(BaseModel):
    estimate: float | None
    low: float | None
    high: float | None


class LearningStats(BaseModel):
    """The learning diagnostics of one method's runs in a scope (nats; runs pooled, not per problem)."""

    runs_with_gap: int
    teacher_logprob_gap: float | None  # mean over runs of Summary.teacher_logprob_gap, nats/token
    discoveries: int  # discoveries whose likelihood was recorded
    discoveries_after_updates: int  # of those, found after at least one update
    gain_nats: float | None  # mean ℓ(θ_d) − ℓ(θ_0) over those discoveries
    per_token_gain_nats: float | None


def learning_stats(summaries: list[Summary]) -> LearningStats | None:
    """Means of the runs' diagnostics; None when no run has any (a method that does not learn)."""
    gaps = [s.teacher_logprob_gap for s in summaries if s.teacher_logprob_gap is not None]
    found = [s.discovery_likelihood for s in summaries if s.discovery_likelihood is not None]
    if not gaps and not found:
        return None
    return LearningStats(
        runs_with_gap=len(gaps),
        teacher_logprob_gap=float(np.mean(gaps)) if gaps else None,
        discoveries=len(found),
        discoveries_after_updates=sum(f.updates_before > 0 for f in found),
        gain_nats=float(np.mean([f.gain_nats for f in found])) if found else None,
        per_token_gain_nats=float(np.mean([f.per_token_gain_nats for f in found])) if found else None,
    )


# ----- what compare reads ----------------------------------------------------------------------


class RunData(BaseModel):
    """One finished run as compare uses it: its observation on each axis it can be placed on."""

    summary: Summary
    batch_size: int
    judged: int  # attempts judged (all of them, also after the discovery within its batch)
    passes: int  # judged attempts that passed
    attempts: metrics.Observation
    compute: metrics.Observation | None = None  # None: the run recorded no per-attempt costs
    wall: metrics.Observation | None = None
    compute_per_attempt: float | None = None
    wall_per_attempt: float | None = None


class Samples(BaseModel):
    """best-of-k's i.i.d. samples on one problem: from the bench's pool or its seeded runs."""

    source: str  # "pool" or "seeded runs"
    samples: int
    passes: int
    compute_per_attempt: float | None = None
    wall_per_attempt: float | None = None


def read_run(bench_dir: Path, key: RunKey, summary: Summary) -> RunData:
    """A run's observations: attempts from the summary; compute and wall time from its attempt
    records' costs, cumulative up to the discovery (or over all attempts when censored)."""
    run = RunDir(run_dir_for(bench_dir, key))
    records: list[AttemptRecord] = run.attempts() if run.attempts_path.exists() else []
    batch = _first_batch(run)
    found = summary.discovered and summary.discovery_k is not None
    time = summary.discovery_k if found else summary.attempts_used
    data = RunData(
        summary=summary, batch_size=batch, judged=max(len(records), summary.attempts_used),
        passes=sum(r.passed for r in records) if records else int(found),
        attempts=metrics.Observation(time=time, discovered=found),
    )
    costs = [r.cost for r in records]
    if records and all(c is not None for c in costs) and len(records) >= time:
        spent = [metrics.compute_units(c.sampled_tokens, c.scored_tokens, c.trained_tokens) for c in costs]
        seconds = [c.wall_s for c in costs]
        data.compute = metrics.Observation(time=float(np.sum(spent[:time])), discovered=found)
        data.wall = metrics.Observation(time=float(np.sum(seconds[:time])), discovered=found)
        data.compute_per_attempt = float(np.mean(spent))
        data.wall_per_attempt = float(np.mean(seconds))
    return data


def _first_batch(run: RunDir) -> int:
    """Attempts in the run's first step (what the method shares with best-of-k before it can
    learn): step 0's record, else the configured batch size (multi-turn's batch is 1 attempt)."""
    try:
        first = run.steps_path.read_text(encoding="utf-8").split("\n", 1)[0]
        return int(json.loads(first)["attempts"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        return int(run.config_data()["config"]["batch_size"])
    except (OSError, KeyError, ValueError, TypeError):
        return 1


def best_of_k_samples(pool: PoolSummary | None, runs: list[RunData]) -> Samples | None:
    """The pool when the bench has one for the problem, else every attempt the seeded best-of-k
    runs judged (stopping at a batch with a pass makes c/N slightly optimistic: approximate)."""
    if pool is not None and pool.samples > 0:
        return Samples(
            source="pool", samples=pool.samples, passes=pool.passes,
            compute_per_attempt=metrics.compute_units(pool.sampled_tokens / pool.samples) if pool.sampled_tokens else None,
            wall_per_attempt=pool.wall_s / pool.samples if pool.wall_s else None,
        )
    if not runs:
        return None
    per_attempt = [r.compute_per_attempt for r in runs]
    per_second = [r.wall_per_attempt for r in runs]
    return Samples(
        source="seeded runs", samples=sum(r.judged for r in runs), passes=sum(r.passes for r in runs),
        compute_per_attempt=float(np.mean(per_attempt)) if all(v is not None for v in per_attempt) else None,
        wall_per_attempt=float(np.mean(per_second)) if all(v is not None for v in per_second) else None,
    )


# ----- the report ------------------------------------------------------------------------------


class AxisCurve(BaseModel):
    points: list[float]
    band: metrics.Band


class MethodStats(BaseModel):
    method: str
    runs: int  # seeded runs (0 for best-of-k from a pool alone)
    discovered: int
    samples: Samples | None = None  # best-of-k: where its estimate comes from
    horizon: int  # τ of the restricted mean (common to the scope)
    discovery_at: dict[int, Interval]
    mean_attempts: float | None  # restricted mean E[min(T, τ)]
    attempts_at: dict[float, metrics.Reach] = {}  # attempts to reach p, per requested p
    population_at: dict[int, Interval] = {}  # split of >= FEW_PROBLEMS problems: for problems like these
    curves: dict[str, AxisCurve] = {}  # axis -> curve with its band ("attempts" always)
    learning: LearningStats | None = None


class Ratio(BaseModel):
    baseline: str
    axis: str
    probability: float | None  # matched discovery probability p*
    method_at: metrics.Reach | None = None  # at the band confidence of the ratio (1 - α/2)
    baseline_at: metrics.Reach | None = None
    ratio: metrics.RatioInterval | None = None  # baseline / method


class RateTest(BaseModel):
    method: str
    skip: int  # attempts skipped per run (the method's first batch, shared with best-of-k)
    result: metrics.RateRatio
    power: float | None  # simulated power for DEFAULT_EFFECT with this design (None: no rate to simulate)
    effect: float
    paired_streams: bool  # best-of-k from seeded runs that share random streams with the method


class ScopeReport(BaseModel):
    scope: str  # "split" or "problem"
    name: str
    label: str  # what the scope holds, e.g. "split first4: 2 of 4 problems (a, b)"
    problems: list[str]
    methods: list[MethodStats]
    ratios: list[Ratio]
    rate_tests: list[RateTest] = []
    verdict: str = ""
    missing_axes: list[str] = []  # axes skipped for want of per-attempt costs


class CompareReport(BaseModel):
    bench_dir: str
    split: str
    main_method: str
    baselines: list[str]
    ks: list[int]
    probabilities: list[float] = []
    confidence: float
    effect: float = DEFAULT_EFFECT
    censoring: str
    scopes: list[ScopeReport]


CENSORING_NOTE = (
    "Intervals: exact Clopper–Pearson, pointwise. Sequential methods: Kaplan–Meier over seeds; a run censored before k is "
    "counted as a failure for the lower end and as a discovery for the upper end (conservative); undefined ('–') beyond the "
    "budget. best-of-k: unbiased pass@k from i.i.d. samples, the rate's exact interval mapped through 1 − (1 − p)^k. "
    "Split rows: the mean over the scope's problems, the interval for these problems only (not other problems). "
    "Mean attempts: restricted mean E[min(T, τ)], undiscovered runs count as τ (a lower bound when not all runs discover)."
)


def _interval_at(points: list[float], band: metrics.Band, k: float) -> Interval:
    if k not in points:
        return Interval(estimate=None, low=None, high=None)
    i = points.index(k)
    return Interval(estimate=band.estimate[i], low=band.low[i], high=band.high[i])


def _axis_points(observations: list[metrics.Observation], per_attempt: list[float]) -> np.ndarray:
    """Evaluation points on a cost axis: every observed time, every step of best-of-k's curves (k ×
    its cost per attempt) and a log-spaced grid, up to the longest observed time."""
    times = np.array([o.time for o in observations if o.time > 0])
    if not times.size:
        return np.array([1.0])
    end = times.max()
    steps = [cost * np.arange(1, int(end / cost) + 1) for cost in per_attempt if cost > 0]
    grid = np.geomspace(times.min() / 2, end, GRID_POINTS)
    return np.unique(np.concatenate([times, grid, *steps]))


class _Scope:
    """The curves of one scope on one axis for every method, at two confidences (band, ratio)."""

    def __init__(self, per_method, samples, axis, points, confidence, shown_until):
        self.points, self.samples, self.axis = points, samples, axis
        self.confidence, self.ratio_confidence = confidence, 1.0 - (1.0 - confidence) / 2.0
        self.shown = points <= shown_until * (1 + 1e-9)  # plotted and where p* is sought: the budget
        self.bands: dict[str, metrics.Band] = {}
        self.ratio_bands: dict[str, metrics.Band] = {}
        for method, per_problem in per_method.items():
            if method == BEST_OF_K:
                pools = self._pools()
                self.bands[method] = metrics.pools_band([(s.samples, s.passes) for s in pools], points, confidence, self._costs(pools))
            else:
                observations = [[getattr(r, axis) for r in runs] for runs in per_problem.values()]
                self.bands[method] = metrics.split_band(observations, points, confidence)
                self.ratio_bands[method] = metrics.split_band(observations, points, self.ratio_confidence)

    def _pools(self) -> list[Samples]:
        return [s for s in self.samples.values() if s is not None]

    def _costs(self, pools: list[Samples]) -> list[float] | None:
        return None if self.axis == "attempts" else [getattr(s, f"{self.axis}_per_attempt") for s in pools]

    def reach(self, method: str, probability: float, for_ratio: bool = True) -> metrics.Reach:
        """Where `method` reaches `probability`, with its interval at the ratio's confidence (1 - α/2)
        or the scope's; best-of-k's is not limited to the budget."""
        confidence = self.ratio_confidence if for_ratio else self.confidence
        if method == BEST_OF_K:
            pools = self._pools()
            return metrics.pools_reach([(s.samples, s.passes) for s in pools], probability, confidence, self._costs(pools))
        points = [float(x) for x in self.points]
        reach = metrics.reach_interval(points, self.ratio_bands[method] if for_ratio else self.bands[method], probability)
        reach.estimate = metrics.attempts_to_reach(self.estimate(method), probability, points)
        return reach

    def curve(self, method: str) -> AxisCurve:
        band = self.bands[method]
        keep = lambda values: [v for v, shown in zip(values, self.shown) if shown]  # noqa: E731
        return AxisCurve(points=keep([float(x) for x in self.points]),
                         band=metrics.Band(estimate=keep(band.estimate), low=keep(band.low), high=keep(band.high)))

    def estimate(self, method: str) -> np.ndarray:
        return np.array([np.nan if v is None else v for v in self.bands[method].estimate])


def scope_report(
    scope: str,
    name: str,
    runs: dict[str, dict[str, list[RunData]]],  # method -> problem -> runs
    samples: dict[str, Samples | None],  # problem -> best-of-k's samples
    *,
    main_method: str,
    baselines: list[str],
    ks: list[int],
    confidence: float,
    probabilities: list[float] = (),
    planned: list[str] | None = None,
    effect: float = DEFAULT_EFFECT,
    simulations: int = planning.DEFAULT_SIMULATIONS,
) -> ScopeReport:
    per_method = {m: p for m, p in runs.items() if p and m != BEST_OF_K}
    if any(s is not None for s in samples.values()):
        per_method[BEST_OF_K] = runs.get(BEST_OF_K, {})
    methods = [m for m in [main_method, *baselines] if m in per_method] + sorted(m for m in per_method if m not in (main_method, *baselines))
    problems = sorted({p for m in methods for p in per_method[m]} | {p for p, s in samples.items() if s is not None})
    sequential = [m for m in methods if m != BEST_OF_K]
    all_runs = [r for m in sequential for runs_ in per_method[m].values() for r in runs_]
    budgets = [r.summary.budget for r in all_runs] + [r.summary.budget for runs_ in runs.get(BEST_OF_K, {}).values() for r in runs_]
    max_k = max(budgets + list(ks) + [1])
    horizon = min(budgets) if budgets else max_k
    longest_budget = max(budgets) if budgets else max_k  # plots and p* stop there; the grid reaches the largest k asked for
    axes: dict[str, _Scope] = {
        "attempts": _Scope(per_method, samples, "attempts", np.arange(1, max_k + 1, dtype=float), confidence, longest_budget)
    }
    missing = []
    for axis in ("compute", "wall"):
        have = bool(all_runs) and all(getattr(r, axis) is not None for r in all_runs) and all(
            getattr(s, f"{axis}_per_attempt") for s in samples.values() if s is not None)
        if have:
            observed = [getattr(r, axis) for r in all_runs]
            longest = max(o.time for o in observed)
            per_attempt = [getattr(s, f"{axis}_per_attempt") for s in samples.values() if s is not None]
            points = _axis_points(observed, per_attempt)
            axes[axis] = _Scope(per_method, samples, axis, points, confidence, longest)
        else:
            missing.append(axis)
    stats = []
    attempts_scope = axes["attempts"]
    attempt_points = [float(x) for x in attempts_scope.points]
    for m in methods:
        band = attempts_scope.bands[m]
        curve = attempts_scope.estimate(m)
        mean = metrics.restricted_mean_attempts(curve[:horizon], horizon) if horizon > 0 else math.nan
        seeded = [r for runs_ in runs.get(m, {}).values() for r in runs_]
        curves = {axis: sc.curve(m) for axis, sc in axes.items()}
        pooled = samples if m == BEST_OF_K else {}
        population_at = {}
        if scope == "split" and len(problems) >= planning.FEW_PROBLEMS:
            estimates = _per_problem_estimates(m, per_method, samples, attempts_scope.points)
            if len(estimates) >= planning.FEW_PROBLEMS:  # this method's own problems
                population = metrics.population_band(estimates, band, confidence)
                population_at = {k: _interval_at(attempt_points, population, float(k)) for k in ks}
        stats.append(MethodStats(
            method=m,
            runs=len(seeded),
            discovered=sum(r.attempts.discovered for r in seeded) if m != BEST_OF_K else sum(s.passes for s in pooled.values() if s),
            samples=_pooled_samples(pooled) if m == BEST_OF_K else None,
            horizon=horizon,
            discovery_at={k: _interval_at(attempt_points, band, float(k)) for k in ks},
            mean_attempts=None if math.isnan(mean) else mean,
            attempts_at={p: attempts_scope.reach(m, p, for_ratio=False) for p in probabilities},
            population_at=population_at,
            curves=curves,
            learning=learning_stats([r.summary for r in seeded]) if m != BEST_OF_K else None,
        ))
    ratios = []
    if main_method in methods:
        for baseline in [b for b in baselines if b in methods]:
            # p*: the largest probability both reach within the budget, on the attempts axis; the
            # same p* on the compute and wall axes, so that the three ratios describe one target
            attempts_axis = axes["attempts"]
            p = metrics.matched_probability([attempts_axis.estimate(m)[attempts_axis.shown] for m in (main_method, baseline)])
            for axis, sc in axes.items():
                if p is None:
                    ratios.append(Ratio(baseline=baseline, axis=axis, probability=None))
                    continue
                method_at, baseline_at = (sc.reach(m, p) for m in (main_method, baseline))
                ratios.append(Ratio(baseline=baseline, axis=axis, probability=p, method_at=method_at, baseline_at=baseline_at,
                                    ratio=metrics.ratio_interval(baseline_at, method_at)))
    rate_tests = []
    if BEST_OF_K in methods:
        for m in sequential:
            rate_tests.append(_rate_test(m, per_method[m], samples, runs.get(BEST_OF_K, {}), confidence, effect, simulations))
    label = _label(scope, name, problems, planned)
    report = ScopeReport(scope=scope, name=name, label=label, problems=problems, methods=stats, ratios=ratios,
                         rate_tests=rate_tests, missing_axes=missing)
    report.verdict = verdict(report, main_method, confidence)
    return report


def _per_problem_estimates(method, per_method, samples, points) -> list[np.ndarray]:
    """Each problem's own discovery curve: Kaplan–Meier of its runs, or best-of-k's pool estimate."""
    if method == BEST_OF_K:
        return [np.array([metrics.pool_estimate(s.samples, s.passes, int(k)) for k in points])
                for s in samples.values() if s is not None and s.samples > 0]
    return [metrics.kaplan_meier_at([r.attempts for r in runs], points) for runs in per_method[method].values() if runs]


def _pooled_samples(samples: dict[str, Samples | None]) -> Samples | None:
    present = [s for s in samples.values() if s is not None]
    if not present:
        return None
    sources = sorted({s.source for s in present})
    return Samples(source=" + ".join(sources), samples=sum(s.samples for s in present), passes=sum(s.passes for s in present))


def _label(scope: str, name: str, problems: list[str], planned: list[str] | None) -> str:
    if scope != "split":
        return f"problem {name}"
    total = len(planned) if planned else len(problems)
    shown = ", ".join(problems[:6]) + (f", … ({len(problems) - 6} more)" if len(problems) > 6 else "")
    return f"split {name}: {len(problems)} of {total} problems ({shown})"


def _rate_test(method, per_problem, samples, seeded_best_of_k, confidence, effect, simulations) -> RateTest:
    """θ of `method` vs best-of-k after the method's first batch, stratified by problem, and the
    power of the same test for a θ = effect with this design (rates: best-of-k's c/N per problem)."""
    strata, rates, seeds, budgets = [], [], [], []
    skip = max((r.batch_size for runs_ in per_problem.values() for r in runs_), default=1)
    for problem, runs_ in per_problem.items():
        s = samples.get(problem)
        if s is None or not runs_:
            continue
        e = metrics.exposure([r.attempts for r in runs_], skip)
        strata.append(metrics.RateStratum(discoveries=e.discoveries, attempts=e.attempts, baseline_passes=s.passes, baseline_samples=s.samples))
        rates.append(s.passes / s.samples)
        seeds.append(len(runs_))
        budgets.append(max(r.summary.budget for r in runs_))
    result = metrics.rate_ratio(strata, confidence)
    power = None
    if strata and any(r > 0 for r in rates):
        pool = int(np.median([s.baseline_samples for s in strata]))
        power = planning.simulate_power(rates, seeds=int(min(seeds)), budget=int(max(budgets)), batch=skip, pool=pool,
                                        effect=effect, alpha=1.0 - confidence, simulations=simulations)
    paired = any(samples.get(p) is not None and samples[p].source == "seeded runs" for p in per_problem) and bool(seeded_best_of_k)
    return RateTest(method=method, skip=skip, result=result, power=power, effect=effect, paired_streams=paired)


def verdict(scope: ScopeReport, main_method: str, confidence: float) -> str:
    """One sentence: what this scope's data can and cannot support about the main method vs best-of-k."""
    test = next((t for t in scope.rate_tests if t.method == main_method), None)
    where = f"{scope.label}"
    about = " (about these problems only)" if scope.scope == "split" else ""
    if test is None:
        return f"{where}: no {main_method} runs or no best-of-k samples, so nothing can be said about {main_method} against best-of-k."
    r = test.result
    power = f"; a {test.effect:g}× rate would have been detected with probability {test.power:.0%}" if test.power is not None else ""
    level = 1.0 - confidence
    if r.strata == 0:
        return (f"{where}: no discovery by {main_method} after its first batch and no best-of-k pass, so the data cannot say whether "
                f"{main_method} is faster or slower{about}; they only bound how rarely either discovers{power}.")
    high = "∞" if r.high is None else f"{r.high:.2g}"
    estimate = "∞" if r.estimate is None else f"{r.estimate:.2g}"
    interval = f"θ = {estimate}, {int(confidence * 100)}% interval [{r.low:.2g}, {high}], p = {r.p_value:.2f}"
    if r.p_value < level:
        direction = "higher" if (r.estimate is None or r.estimate > 1) else "lower"
        return (f"{where}: the data support a {direction} per-attempt discovery rate for {main_method} than for best-of-k "
                f"after the first batch ({interval}){about}, though not its size beyond that interval.")
    return (f"{where}: the data cannot distinguish {main_method} from best-of-k ({interval}): rate ratios from {r.low:.2g} "
            f"to {high} are all consistent with them{about}{power}.")


def compare_bench(
    bench_dir: Path,
    *,
    baselines: list[str],
    ks: list[int],
    probabilities: list[float] = (0.5,),
    main_method: str = MAIN_METHOD,
    confidence: float = metrics.DEFAULT_CONFIDENCE,
    effect: float = DEFAULT_EFFECT,
    simulations: int = planning.DEFAULT_SIMULATIONS,
) -> CompareReport:
    """Read every finished run and pool of the bench and build the per-split and per-problem report."""
    summaries = load_summaries(bench_dir)
    pools = load_pools(bench_dir)
    manifest: BenchManifest | None = load_manifest(bench_dir)
    by_method: dict[str, dict[str, list[RunData]]] = {}
    for key, summary in sorted(summaries.items(), key=lambda item: (item[0].problem_id, item[0].method, item[0].seed)):
        by_method.setdefault(key.method, {}).setdefault(key.problem_id, []).append(read_run(bench_dir, key, summary))
    problem_ids = sorted({key.problem_id for key in summaries} | set(pools))
    samples = {p: best_of_k_samples(pools.get(p), by_method.get(BEST_OF_K, {}).get(p, [])) for p in problem_ids}
    options = dict(main_method=main_method, baselines=baselines, ks=ks, confidence=confidence, probabilities=list(probabilities),
                   effect=effect, simulations=simulations)
    split_name = manifest.split if manifest else "all"
    scopes = []
    if problem_ids:
        scopes.append(scope_report("split", split_name, by_method, samples, planned=manifest.problem_ids if manifest else None, **options))
    for problem_id in problem_ids:
        one = {m: {problem_id: p[problem_id]} for m, p in by_method.items() if problem_id in p}
        scopes.append(scope_report("problem", problem_id, one, {problem_id: samples[problem_id]}, **options))
    return CompareReport(
        bench_dir=str(bench_dir), split=split_name, main_method=main_method, baselines=baselines, ks=ks,
        probabilities=list(probabilities), confidence=confidence, effect=effect, censoring=CENSORING_NOTE, scopes=scopes,
    )


# ----- tables ----------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _fmt_reach(reach: metrics.Reach | None, digits: int = 0) -> str:
    if reach is None or (reach.estimate is None and reach.high is None and reach.low is None):
        return "–"
    value = lambda v: "–" if v is None else f"{v:.{digits}f}" if digits else f"{v:g}"  # noqa: E731
    high = "∞" if reach.high is None else value(reach.high)
    return f"{value(reach.estimate)} [{value(reach.low)}, {high}]"


def _fmt_ratio(ratio: metrics.RatioInterval | None) -> str:
    if ratio is None:
        return "–"
    high = "∞" if ratio.high is None else f"{ratio.high:.3g}"
    return f"{_fmt(ratio.estimate)} [{ratio.low:.3g}, {high}]"


def table_header(report: CompareReport) -> list[str]:
    return (
        ["scope", "method", "discovered/runs"]
        + [f"discovery@{k}" for k in report.ks]
        + [f"attempts to p={p:g}" for p in report.probabilities]
        + ["mean attempts (≤τ)", f"attempts at p*: method vs {report.main_method}", f"ratio to {report.main_method}"]
    )


def _runs_cell(stats: MethodStats) -> str:
    if stats.samples is not None:
        return f"{stats.samples.passes}/{stats.samples.samples} samples ({stats.samples.source})"
    return f"{stats.discovered}/{stats.runs}"


def table_rows(report: CompareReport, scope: ScopeReport) -> list[list[str]]:
    """One row per method; baselines carry k_baseline(p*) vs k_main(p*) and the ratio with its interval."""
    rows = []
    ratio_of = {r.baseline: r for r in scope.ratios if r.axis == "attempts"}
    for stats in scope.methods:
        cells = [scope.label, stats.method, _runs_cell(stats)]
        for k in report.ks:
            iv = stats.discovery_at[k]
            cells.append(_fmt(iv.estimate) + (f" [{_fmt(iv.low)}, {_fmt(iv.high)}]" if iv.estimate is not None else ""))
        cells += [_fmt_reach(stats.attempts_at.get(p)) for p in report.probabilities]
        cells.append(f"{_fmt(stats.mean_attempts, 1)} (τ={stats.horizon})")
        if stats.method == report.main_method:
            cells += ["(reference)", "1.00"]
        elif stats.method in ratio_of:
            r = ratio_of[stats.method]
            if r.probability:
                attempts = f"{_fmt_reach(r.baseline_at)} vs {_fmt_reach(r.method_at)} (p*={r.probability:.2f})"
            else:
                attempts = "– (no common p*)"
            cells += [attempts, _fmt_ratio(r.ratio)]
        else:
            cells += ["–", "–"]
        rows.append(cells)
    return rows


def population_lines(report: CompareReport, scopes: list[ScopeReport]) -> list[str]:
    """The split's discovery@k with the interval for problems like these (>= FEW_PROBLEMS problems), or why not."""
    rows = [
        [scope.label, stats.method]
        + [_fmt(iv.estimate) + (f" [{_fmt(iv.low)}, {_fmt(iv.high)}]" if iv.estimate is not None else "")
           for iv in (stats.population_at.get(k, Interval(estimate=None, low=None, high=None)) for k in report.ks)]
        for scope in scopes for stats in scope.methods if stats.population_at
    ]
    if not rows:
        few = ", ".join(f"{s.label.split(':')[0]} has {len(s.problems)}" for s in scopes)
        return [f"The split intervals above are for these problems only. An interval for problems like them needs at least "
                f"{planning.FEW_PROBLEMS} problems ({few}): none is given.", ""]
    return [
        "For problems like these (the split's problems taken as a random sample): the same means with a t-interval over "
        "the per-problem estimates, widened to the fixed-problem interval where that is wider (approximate; "
        "docs/statistics.md).",
        "",
        *_table(["scope", "method"] + [f"discovery@{k}" for k in report.ks], rows),
    ]


RATIO_HEADER = ["scope", "baseline", "axis", "p*", "baseline needs", "method needs", "ratio baseline / method [90%]"]


def ratio_rows(report: CompareReport, scope: ScopeReport) -> list[list[str]]:
    rows = []
    for r in scope.ratios:
        digits = 0 if r.axis == "attempts" else 3
        fmt = lambda reach: _fmt_reach(reach) if digits == 0 else _fmt_reach_sci(reach)  # noqa: E731
        rows.append([scope.label, r.baseline, r.axis, _fmt(r.probability), fmt(r.baseline_at), fmt(r.method_at), _fmt_ratio(r.ratio)])
    for axis in scope.missing_axes:
        rows.append([scope.label, "all", axis, "–", "–", "–", "skipped: runs without per-attempt costs"])
    return rows


def _fmt_reach_sci(reach: metrics.Reach | None) -> str:
    if reach is None:
        return "–"
    value = lambda v: "–" if v is None else f"{v:.3g}"  # noqa: E731
    return f"{value(reach.estimate)} [{value(reach.low)}, {'∞' if reach.high is None else value(reach.high)}]"


RATE_HEADER = ["scope", "method", "after attempt", "discoveries / expected under best-of-k", "θ [90%]", "p-value", "power for θ = effect"]


def rate_rows(scope: ScopeReport) -> list[list[str]]:
    rows = []
    for t in scope.rate_tests:
        r = t.result
        theta = "–" if r.strata == 0 else f"{'∞' if r.estimate is None else f'{r.estimate:.2f}'} [{r.low:.2f}, {'∞' if r.high is None else f'{r.high:.2f}'}]"
        rows.append([
            scope.label, t.method, str(t.skip), f"{r.observed} / {r.expected:.2f}", theta, f"{r.p_value:.2f}",
            "–" if t.power is None else f"{t.power:.0%} (θ = {t.effect:g})",
        ])
    return rows


LEARNING_HEADER = [
    "scope", "method", "mean teacher − student (nats/token)", "discoveries after ≥1 update",
    "log-likelihood gain at discovery (nats)", "gain per token (nats)",
]


def learning_rows(scope: ScopeReport) -> list[list[str]]:
    """One row per method with learning diagnostics (sdpo), for LEARNING_HEADER."""
    rows = []
    for stats in scope.methods:
        learning = stats.learning
        if learning is None:
            continue
        rows.append([
            scope.label,
            stats.method,
            f"{_fmt(learning.teacher_logprob_gap, 4)} ({learning.runs_with_gap} runs)",
            f"{learning.discoveries_after_updates}/{learning.discoveries}",
            _fmt(learning.gain_nats),
            _fmt(learning.per_token_gain_nats, 4),
        ])
    return rows


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(row) + " |" for row in rows), ""]


def to_markdown(report: CompareReport) -> str:
    percent = int(report.confidence * 100)
    lines = [
        f"# Comparison: {report.main_method} vs {', '.join(report.baselines) or 'nothing'} (split {report.split})",
        "",
        f"{percent}% intervals in brackets. {report.censoring}",
        "Ratio: what a baseline needs to reach p* (the largest discovery probability both reach) divided by what "
        f"{report.main_method} needs, with a {percent}% interval from the ends of each side's {100 - (100 - percent) // 2}% "
        "interval (Bonferroni; p* itself is taken as given).",
        "",
        "## What the data support",
        "",
        *(f"- {scope.verdict}" for scope in report.scopes),
        "",
    ]
    header = table_header(report)
    for kind in ("split", "problem"):
        scopes = [s for s in report.scopes if s.scope == kind]
        if scopes:
            lines += [f"## Per {kind}", "", *_table(header, [row for s in scopes for row in table_rows(report, s)])]
        if kind == "split":
            lines += population_lines(report, scopes)
    lines += [
        "## Attempts, compute and wall time at matched discovery probability",
        "",
        f"Compute: {metrics.COMPUTE_UNIT}. best-of-k's compute and seconds per attempt are its samples' means.",
        "",
        *_table(RATIO_HEADER, [row for s in report.scopes for row in ratio_rows(report, s)]),
        "## Rate ratio against best-of-k",
        "",
        "θ: the method's per-attempt discovery hazard after its first batch (which best-of-k shares) over best-of-k's "
        "per-attempt rate; exact conditional test stratified by problem (ttsd.metrics.rate_ratio). Power: the probability "
        f"this test (α = {1 - report.confidence:.2f}) rejects θ = 1 when θ = {report.effect:g}, simulated with this bench's "
        "problems (best-of-k's rates), seeds, budget, batch and samples.",
        "",
        *_table(RATE_HEADER, [row for s in report.scopes for row in rate_rows(s)]),
    ]
    if any(t.paired_streams for s in report.scopes for t in s.rate_tests):
        lines += [
            "best-of-k here comes from seeded runs that share random streams with the method's (attempt k of seed s draws "
            "the same stream in both): the two are positively correlated, which the test (it assumes independence) ignores, "
            "so its p-values are conservative. A pool (`ttsd bench --pool N`) gives independent, larger samples.",
            "",
        ]
    learning = [row for scope in report.scopes for row in learning_rows(scope)]
    if learning:
        lines += [
            "## Learning diagnostics",
            "",
            "Teacher − student: the mean over runs of each run's mean, over its steps, of log π_T(y_t) − log π_S(y_t) "
            "on failed attempts (how much the feedback changes the model's view of its own tokens; < 0: the "
            "teacher blames them). Gain: ℓ(θ_d) − ℓ(θ_0), the discovered solution's log-likelihood under the "
            "weights that found it minus under the initial weights (0 when found before any update).",
            "",
            *_table(LEARNING_HEADER, learning),
        ]
    return "\n".join(lines)


# ----- plots -----------------------------------------------------------------------------------


def plot_scope(scope: ScopeReport, path: Path, confidence: float) -> Path:
    """discovery curves with their bands against attempts (and compute, wall time when recorded), log x axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    axes_shown = [a for a in AXES if all(a in m.curves for m in scope.methods)]
    fig, axes = plt.subplots(1, len(axes_shown), figsize=(6.4 * len(axes_shown), 4.6), dpi=100, squeeze=False)
    for ax, axis in zip(axes[0], axes_shown):
        for stats in scope.methods:
            curve = stats.curves[axis]
            values = {f: np.array([np.nan if v is None else v for v in getattr(curve.band, f)]) for f in ("estimate", "low", "high")}
            label = f"{stats.method} ({_runs_cell(stats)})"
            (line,) = ax.step(curve.points, values["estimate"], where="post", label=label)
            ax.fill_between(curve.points, values["low"], values["high"], step="post", alpha=0.15, color=line.get_color(), linewidth=0)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}"))
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel(AXIS_LABELS[axis] if axis != "compute" else "compute (forward-token equivalents)")
        ax.set_ylabel("discovery probability")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
    title = f"{scope.label}\n{int(confidence * 100)}% exact pointwise bands"
    if scope.missing_axes:
        title += f"; no {' or '.join(scope.missing_axes)} axis: runs without per-attempt costs"
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_outputs(report: CompareReport, out_dir: Path) -> dict[str, Path]:
    """compare.md, compare.json and plots/<scope>-<name>.png under out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {"markdown": out_dir / "compare.md", "json": out_dir / "compare.json"}
    written["markdown"].write_text(to_markdown(report) + copy_markdown(Path(report.bench_dir)) + "\n")
    written["json"].write_text(json.dumps(report.model_dump(mode="json"), indent=2) + "\n")
    for scope in report.scopes:
        written[f"{scope.scope}:{scope.name}"] = plot_scope(scope, out_dir / "plots" / f"{scope.scope}-{scope.name}.png", report.confidence)
    return written


# ----- the copy diagnostic (issue 19): self-contained, one row per method or variant --------------
COPY_HEADER = ["method", "runs", "quoted tokens: teacher − student (nats/token)", "other tokens", "quoted − other"]


def copy_rows(bench_dir: Path) -> list[list[str]]:
    """Per method (a bench variant is its own method) over all finished runs of the bench: the copy
    diagnostic (ttsd.sdpo.copying) pooled over the runs' scored tokens. Methods without one (the
    baselines, runs from before it) have no row."""
    from ttsd.sdpo.copying import pool

    by_method: dict[str, list] = {}
    for key, summary in load_summaries(bench_dir).items():
        if summary.copy_gap is not None:
            by_method.setdefault(key.method, []).append(summary.copy_gap)
    rows = []
    for method, gaps in sorted(by_method.items()):
        pooled = pool(gaps)
        rows.append([
            method, str(len(gaps)),
            f"{_fmt(pooled.quoted_gap, 3)} ({pooled.quoted_tokens})", f"{_fmt(pooled.other_gap, 3)} ({pooled.other_tokens})",
            _fmt(pooled.excess, 3),
        ])
    return rows


def copy_markdown(bench_dir: Path) -> str:
    """The copy-diagnostic section of compare.md ("" when no run has one)."""
    rows = copy_rows(bench_dir)
    if not rows:
        return ""
    return "\n".join([
        "",
        "## Copy diagnostic",
        "",
        "Teacher − student log-prob on the failed attempts' tokens that appear verbatim in the teacher's feedback "
        "(quoted source line, printed output, input shown; ttsd.sdpo.copying) vs on their other tokens, pooled "
        "over tokens; quoted − other > 0.5 says the teacher copies its feedback (docs/feedback.md).",
        "",
        "| " + " | ".join(COPY_HEADER) + " |",
        "|" + "---|" * len(COPY_HEADER),
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
    ])

"""`ttsd compare`: discovery@k tables (markdown + JSON) and PNG curves from a bench directory.

Per problem and per split (all problems of the bench), for each method:
- discovery@k at the chosen k with a bootstrapped 90% interval (Kaplan–Meier, see ttsd.metrics),
- the restricted mean attempts to first discovery E[min(T, τ)], τ = the common horizon of the scope
  (the shortest defined curve among its methods, i.e. the smallest budget),
- for best-of-k, the unbiased pass@k from all its attempts pooled,
- the attempts each method needs to reach given discovery probabilities p (smallest k with
  discovery@k >= p; "–" when the curve never gets there within the budget),
- and, for the main method (sdpo) against each baseline, the attempts each needs to reach the
  matched discovery probability p* (the largest p both curves reach) and their ratio
  k_baseline(p*) / k_sdpo(p*) (> 1: sdpo needs fewer attempts),
- for methods that learn (sdpo), the learning diagnostics of ttsd.sdpo.diagnostics pooled over the
  scope's runs: the mean teacher-minus-student log-prob gap (each run's mean over its steps), and at
  discovery the mean log-likelihood gain of the solution, ℓ(θ_d) − ℓ(θ_0), with how many discoveries
  came after at least one update (the others were found by the initial weights: gain 0).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from ttsd import metrics
from ttsd.bench import BenchManifest, load_manifest, load_summaries
from ttsd.runs import Summary

MAIN_METHOD = "sdpo"
DEFAULT_KS = (1, 4, 16, 64, 256)
POOLED_SAMPLE_METHODS = ("best-of-k",)  # independent samples: pass@k applies


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


class MethodStats(BaseModel):
    method: str
    runs: int
    discovered: int
    horizon: int  # τ of the restricted mean (common to the scope)
    discovery_at: dict[int, Interval]
    mean_attempts: float | None  # restricted mean E[min(T, τ)]
    pass_at: dict[int, float | None] = {}
    attempts_at: dict[float, int | None] = {}  # smallest k with discovery@k >= p, per requested p
    curve: metrics.Band
    learning: LearningStats | None = None  # sdpo's learning diagnostics; None for methods that do not learn


class Ratio(BaseModel):
    baseline: str
    probability: float | None  # matched discovery probability p*
    method_attempts: int | None
    baseline_attempts: int | None
    ratio: float | None  # baseline_attempts / method_attempts


class ScopeReport(BaseModel):
    scope: str  # "split" or "problem"
    name: str
    problems: list[str]
    methods: list[MethodStats]
    ratios: list[Ratio]


class CompareReport(BaseModel):
    bench_dir: str
    split: str
    main_method: str
    baselines: list[str]
    ks: list[int]
    probabilities: list[float] = []
    confidence: float
    censoring: str
    scopes: list[ScopeReport]


CENSORING_NOTE = (
    "discovery@k: Kaplan–Meier over seeds, runs that spent their budget are right-censored at it; "
    "undefined ('–') beyond the largest budget. Mean attempts: restricted mean E[min(T, τ)], "
    "undiscovered runs count as τ (a lower bound when not all runs discover)."
)


def _observations(summaries: list[Summary]) -> list[metrics.Observation]:
    return [
        metrics.Observation(time=s.discovery_k, discovered=True)
        if s.discovered and s.discovery_k is not None
        else metrics.Observation(time=s.attempts_used, discovered=False)
        for s in summaries
    ]


def _interval(band: metrics.Band, k: int) -> Interval:
    if k > len(band.estimate):
        return Interval(estimate=None, low=None, high=None)
    return Interval(estimate=band.estimate[k - 1], low=band.low[k - 1], high=band.high[k - 1])


def scope_report(
    scope: str,
    name: str,
    runs: dict[str, dict[str, list[Summary]]],  # method -> problem -> summaries
    *,
    main_method: str,
    baselines: list[str],
    ks: list[int],
    confidence: float,
    resamples: int,
    probabilities: list[float] = (),
) -> ScopeReport:
    methods = [m for m in [main_method, *baselines] if runs.get(m)] + sorted(
        m for m in runs if m not in (main_method, *baselines) and runs[m]
    )
    per_method_obs = {m: [_observations(s) for s in runs[m].values()] for m in methods}
    max_k = max([o.time for obs in per_method_obs.values() for p in obs for o in p] + [max(ks, default=1)])
    curves = {m: metrics.split_curve(per_method_obs[m], max_k) for m in methods}
    horizon = min((metrics.defined_length(c) for c in curves.values()), default=0)
    stats = []
    for m in methods:
        band = metrics.bootstrap_band(per_method_obs[m], max_k, confidence=confidence, resamples=resamples)
        pooled = [o for p in per_method_obs[m] for o in p]
        pass_at: dict[int, float | None] = {}
        if m in POOLED_SAMPLE_METHODS:
            # per problem from its pooled attempts, then the mean over problems (like the split curve)
            counts = [metrics.sample_counts(obs) for obs in per_method_obs[m]]
            pass_at = {
                k: float(np.mean([metrics.pass_at_k(n, c, k) for n, c in counts])) if all(k <= n for n, _ in counts) else None
                for k in ks
            }
        mean = metrics.restricted_mean_attempts(curves[m], horizon) if horizon > 0 else math.nan
        stats.append(
            MethodStats(
                method=m,
                runs=len(pooled),
                discovered=sum(o.discovered for o in pooled),
                horizon=horizon,
                discovery_at={k: _interval(band, k) for k in ks},
                mean_attempts=None if math.isnan(mean) else mean,
                pass_at=pass_at,
                attempts_at={p: metrics.attempts_to_reach(curves[m], p) for p in probabilities},
                curve=band,
                learning=learning_stats([s for per_problem in runs[m].values() for s in per_problem]),
            )
        )
    ratios = []
    if main_method in curves:
        for baseline in baselines:
            if baseline not in curves:
                continue
            p = metrics.matched_probability([curves[main_method], curves[baseline]])
            k_main = metrics.attempts_to_reach(curves[main_method], p) if p else None
            k_base = metrics.attempts_to_reach(curves[baseline], p) if p else None
            ratios.append(
                Ratio(
                    baseline=baseline,
                    probability=p,
                    method_attempts=k_main,
                    baseline_attempts=k_base,
                    ratio=k_base / k_main if k_main and k_base else None,
                )
            )
    problems = sorted({p for m in methods for p in runs[m]})
    return ScopeReport(scope=scope, name=name, problems=problems, methods=stats, ratios=ratios)


def compare_bench(
    bench_dir: Path,
    *,
    baselines: list[str],
    ks: list[int],
    probabilities: list[float] = (0.5,),
    main_method: str = MAIN_METHOD,
    confidence: float = metrics.DEFAULT_CONFIDENCE,
    resamples: int = metrics.DEFAULT_BOOTSTRAP,
) -> CompareReport:
    """Read every finished run of the bench and build the per-split and per-problem report."""
    summaries = load_summaries(bench_dir)
    manifest: BenchManifest | None = load_manifest(bench_dir)
    by_method: dict[str, dict[str, list[Summary]]] = {}
    for key, summary in sorted(summaries.items(), key=lambda item: (item[0].problem_id, item[0].method, item[0].seed)):
        by_method.setdefault(key.method, {}).setdefault(key.problem_id, []).append(summary)
    options = dict(
        main_method=main_method, baselines=baselines, ks=ks, confidence=confidence, resamples=resamples,
        probabilities=list(probabilities),
    )
    split_name = manifest.split if manifest else "all"
    scopes = [scope_report("split", split_name, by_method, **options)] if by_method else []
    for problem_id in sorted({key.problem_id for key in summaries}):
        one = {m: {problem_id: p[problem_id]} for m, p in by_method.items() if problem_id in p}
        scopes.append(scope_report("problem", problem_id, one, **options))
    return CompareReport(
        bench_dir=str(bench_dir),
        split=split_name,
        main_method=main_method,
        baselines=baselines,
        ks=ks,
        probabilities=list(probabilities),
        confidence=confidence,
        censoring=CENSORING_NOTE,
        scopes=scopes,
    )


def _fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def table_header(report: CompareReport) -> list[str]:
    return (
        ["scope", "method", "discovered/runs"]
        + [f"discovery@{k}" for k in report.ks]
        + [f"attempts to p={p:g}" for p in report.probabilities]
        + ["mean attempts (≤τ)", f"attempts at p*: method vs {report.main_method}", f"ratio to {report.main_method}"]
    )


def table_rows(report: CompareReport, scope: ScopeReport) -> list[list[str]]:
    """One row per method; baselines carry k_baseline(p*) and the ratio k_baseline / k_main."""
    rows = []
    ratio_of = {r.baseline: r for r in scope.ratios}
    for stats in scope.methods:
        cells = [f"{scope.scope} {scope.name}", stats.method, f"{stats.discovered}/{stats.runs}"]
        for k in report.ks:
            iv = stats.discovery_at[k]
            cell = _fmt(iv.estimate)
            if iv.estimate is not None and iv.low is not None:
                cell += f" [{_fmt(iv.low)}, {_fmt(iv.high)}]"
            if stats.pass_at.get(k) is not None:
                cell += f" (pass@k {_fmt(stats.pass_at[k])})"
            cells.append(cell)
        cells += [str(stats.attempts_at.get(p) or "–") for p in report.probabilities]
        cells.append(f"{_fmt(stats.mean_attempts, 1)} (τ={stats.horizon})")
        if stats.method == report.main_method:
            cells += ["(reference)", "1.00"]
        elif stats.method in ratio_of:
            r = ratio_of[stats.method]
            if r.probability:
                attempts = f"{r.baseline_attempts or '–'} vs {r.method_attempts or '–'} (p*={r.probability:.2f})"
            else:
                attempts = "– (no common p*)"
            cells += [attempts, _fmt(r.ratio)]
        else:
            cells += ["–", "–"]
        rows.append(cells)
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
            f"{scope.scope} {scope.name}",
            stats.method,
            f"{_fmt(learning.teacher_logprob_gap, 4)} ({learning.runs_with_gap} runs)",
            f"{learning.discoveries_after_updates}/{learning.discoveries}",
            _fmt(learning.gain_nats),
            _fmt(learning.per_token_gain_nats, 4),
        ])
    return rows


def to_markdown(report: CompareReport) -> str:
    header = table_header(report)
    lines = [
        f"# Comparison: {report.main_method} vs {', '.join(report.baselines) or 'nothing'} (split {report.split})",
        "",
        f"{int(report.confidence * 100)}% bootstrap intervals in brackets. {report.censoring}",
        "Ratio: attempts a baseline needs to reach p* (the largest discovery probability both reach) "
        f"divided by those {report.main_method} needs.",
        "",
    ]
    for kind in ("split", "problem"):
        scopes = [s for s in report.scopes if s.scope == kind]
        if not scopes:
            continue
        lines += [f"## Per {kind}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for scope in scopes:
            lines += ["| " + " | ".join(row) + " |" for row in table_rows(report, scope)]
        lines.append("")
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
            "| " + " | ".join(LEARNING_HEADER) + " |",
            "|" + "---|" * len(LEARNING_HEADER),
            *("| " + " | ".join(row) + " |" for row in learning),
            "",
        ]
    return "\n".join(lines)


def plot_scope(scope: ScopeReport, path: Path, confidence: float) -> Path:
    """discovery@k curves with their bootstrap bands, log-scaled k axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=100)
    for stats in scope.methods:
        estimate = np.array([np.nan if v is None else v for v in stats.curve.estimate])
        low = np.array([np.nan if v is None else v for v in stats.curve.low])
        high = np.array([np.nan if v is None else v for v in stats.curve.high])
        ks = np.arange(1, len(estimate) + 1)
        (line,) = ax.step(ks, estimate, where="post", label=f"{stats.method} ({stats.discovered}/{stats.runs})")
        ax.fill_between(ks, low, high, step="post", alpha=0.2, color=line.get_color(), linewidth=0)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("attempts k")
    ax.set_ylabel("discovery@k")
    ax.set_title(f"{scope.scope} {scope.name} ({int(confidence * 100)}% bootstrap bands)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left")
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
        written[f"{scope.scope}:{scope.name}"] = plot_scope(
            scope, out_dir / "plots" / f"{scope.scope}-{scope.name}.png", report.confidence
        )
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

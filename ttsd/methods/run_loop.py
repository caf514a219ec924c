"""The run loop every method shares: the run directory, the judge, attempt records, the step loop's
bookkeeping (budget, discovery, resume) and the progress callback.

A method implements `Method.run_step(step, num_attempts, last_batch) -> StepOutcome`; `run_method`
drives it: it numbers attempts (k = 1, 2, ... in order within a batch), stops at discovery (unless
`continue_after_discovery`) or when the budget is spent, writes attempts before the step record,
and calls `save_state` before the step record so that a completed step can always be resumed.
What a method measures beyond that (sdpo's teacher gaps) it adds through `record_attempts`,
`annotate_step` and `summary_diagnostics`.

`last_batch` is True when the step's attempts spend the rest of the budget: nothing learnt from
them could be used, so a method skips its learning there (sdpo).

Costs: every attempt record carries its `AttemptCost` (ttsd.runs): its own sampled and prompt
tokens, and an even share of its step's wall seconds (sampling, judging, learning, sync: the
`time_step_s` of its StepRecord) and of the step's scored and trained tokens, which the method
reports on the StepRecord. Summed over a step's attempts they give the step's numbers exactly.

Random streams: step s samples with seed `step_seed(config.seed, s)`, a pure function of the run's
seed and the step number, so a resumed run redoes an interrupted step exactly.
"""

from __future__ import annotations

import functools
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ttsd.config import SolveConfig
from ttsd.engine.types import SamplingSettings
from ttsd.judge import Judgement
from ttsd.problems import Problem
from ttsd.runs import AttemptRecord, RunDir, StepRecord, Summary, attempt_costs
from ttsd.stop_points import stop_point

Progress = Callable[[StepRecord, Summary], None]


def step_seed(seed: int, step: int) -> int:
    """The sampling seed of step `step`: distinct per step, the same on every run with this seed."""
    return (seed * 1_000_003 + step * 7919) % (2**31 - 1)


@dataclass
class Attempt:
    response: str
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str
    prompt_ids: list[int]
    judgement: Judgement
    teacher_gaps: list[float] | None = None  # log π_T − log π_S per token, when a self-teacher scored it (sdpo)
    quoted: list[bool] | None = None  # per token: does it appear verbatim in the teacher's feedback (sdpo, ttsd.sdpo.copying)


@dataclass
class StepOutcome:
    attempts: list[Attempt]
    record: StepRecord  # timings and learning stats; attempts/verdicts are filled in by run_method
    extra_files: dict[str, str] = field(default_factory=dict)


class Method:
    """A method's life cycle: `setup(resume_state)`, then `run_step` per step, `save_state`, `close`."""

    def __init__(self, problem: Problem, config: SolveConfig, run: RunDir, model_path: Path) -> None:
        self.problem = problem
        self.config = config
        self.run = run
        self.model_path = model_path
        self.judge = None

    def make_judge(self) -> Any:
        from ttsd.judge import Judge
        from ttsd.sandbox import make_sandbox

        self.judge = Judge(
            make_sandbox(self.config.sandbox), max_workers=self.config.judge_workers, feedback=self.config.feedback_options()
        )
        return self.judge

    def judge_samples(self, prompts: list[list[int]], samples: list[Any]) -> list[Attempt]:
        judgements = self.judge.judge_many(self.problem, [s.text for s in samples], [s.finish_reason for s in samples])
        return [
            Attempt(s.text, list(s.token_ids), list(s.logprobs), s.finish_reason, list(p), j)
            for p, s, j in zip(prompts, samples, judgements)
        ]

    @property
    def tokenizer(self) -> Any:
        if getattr(self, "_tokenizer", None) is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        return self._tokenizer

    def batch_size(self) -> int:
        return self.config.batch_size

    def model_limit(self) -> int | None:
        """The model's own context length (its config's max_position_embeddings), if it says."""
        from transformers import AutoConfig

        return getattr(AutoConfig.from_pretrained(self.model_path), "max_position_embeddings", None)

    def context_length(self) -> int:
        """What the sampler must hold per attempt: this method's prompt (`self.prompt_ids`, set by
        setup before the sampler) + max_tokens; see `ttsd.config.context_length`."""
        from ttsd.config import context_length

        return context_length(len(self.prompt_ids), self.config.max_tokens, self.config.max_model_len, self.model_limit())

    @functools.cached_property
    def max_model_len(self) -> int:
        """`context_length()`, worked out once (it reads the model's config)."""
        return self.context_length()

    def make_sampler(self, policy: Any = None) -> Any:
        """The sampler: HF generate on the trainer's own model when there is one (no weight copies),
        else the configured backend on the base weights."""
        from ttsd.engine.samplers import make_sampler, pick_backend

        backend = pick_backend(self.config.backend)
        max_model_len = self.max_model_len  # checked for either backend: both must judge whole attempts
        if backend == "hf":
            if policy is not None:
                return policy.sampler()
            return make_sampler("hf", self.model_path, device=self.config.device, dtype=self.config.dtype)
        # Serve in the trainer's dtype (solve resolved 'auto' already) so the trainer-vs-sampler
        # log-prob gap measures staleness only.
        options: dict[str, Any] = {
            "max_model_len": max_model_len,
            "gpu_memory_utilization": self.config.gpu_memory_utilization,
            "seed": self.config.seed,
            "dtype": self.config.dtype,
            "max_logprobs": max(20, self.config.top_k),
        }
        if policy is not None:
            options["max_lora_rank"] = self.config.lora_rank
        return make_sampler("vllm", self.model_path, **options)

    def restore(self, attempts: list[AttemptRecord], steps: list[StepRecord]) -> None:
        """Bring the method's state to the end of the completed steps (default: nothing to do)."""

    def run_step(self, step: int, num_attempts: int, last_batch: bool = False) -> StepOutcome:
        raise NotImplementedError

    def on_discovery(self) -> None:
        """Called once, right after the first passing attempt was recorded."""

    def save_state(self, step: int) -> None:
        """Persist what `restore` needs after step `step` completed."""

    def record_attempts(self, records: list[AttemptRecord], attempts: list[Attempt]) -> None:
        """Write a step's attempt records (`records[i]` is `attempts[i]`); a method adds what it measured."""
        self.run.append_attempts(records)

    def annotate_step(self, record: StepRecord, attempts: list[Attempt]) -> None:
        """Add the method's diagnostics of a finished step to its record (default: none)."""

    def summary_diagnostics(self, steps: list[StepRecord]) -> dict[str, Any]:
        """Summary fields the method's diagnostics fill in from the completed steps (default: none)."""
        return {}

    def sample_and_judge(
        self, prompt_ids: list[int], step: int, num_attempts: int, seed: int | None = None
    ) -> tuple[list[Attempt], float, float]:
        """Draw this step's attempts (seeded by `step_seed`, or `seed` when given) from
        `self.sampler` and judge them. Returns the attempts and the seconds spent sampling and judging."""
        config = self.config
        t0 = time.monotonic()
        settings = SamplingSettings(
            temperature=config.temperature, top_p=config.top_p, max_tokens=config.max_tokens,
            seed=step_seed(config.seed, step) if seed is None else seed,
        )
        samples = self.sampler.sample([prompt_ids], n=num_attempts, settings=settings)[0]
        t1 = time.monotonic()
        attempts = self.judge_samples([prompt_ids] * len(samples), samples)
        return attempts, t1 - t0, time.monotonic() - t1

    def close(self) -> None:
        if self.judge is not None:
            self.judge.close()
        sampler = getattr(self, "sampler", None)
        if sampler is not None:
            sampler.close()


def attempt_records(attempts: list[Attempt], step: int, first_k: int, record: StepRecord | None = None) -> list[AttemptRecord]:
    """The attempts as records numbered from `first_k`; with the step's `record` (its time_step_s
    and token counts filled in), each carries its share of the step's cost (`ttsd.runs.attempt_costs`)."""
    costs = [None] * len(attempts) if record is None else attempt_costs(
        record.time_step_s, [len(a.token_ids) for a in attempts], [len(a.prompt_ids) for a in attempts],
        record.scored_tokens, record.trained_tokens,
    )
    return [
        AttemptRecord(
            k=first_k + i,
            step=step,
            response=a.response,
            code=a.judgement.code,
            verdict=a.judgement.verdict,
            tests_passed=a.judgement.tests_passed,
            tests_total=a.judgement.tests_total,
            feedback=a.judgement.feedback,
            num_tokens=len(a.token_ids),
            finish_reason=a.finish_reason,
            cost=cost,
        )
        for i, (a, cost) in enumerate(zip(attempts, costs))
    ]


def run_method(method: Method, resume: bool, progress: Progress | None = None) -> Summary:
    config, run, problem = method.config, method.run, method.problem
    started = time.monotonic()
    previous_wall = 0.0
    attempts: list[AttemptRecord] = []
    steps: list[StepRecord] = []
    if resume:
        attempts, steps = run.rollback_to_completed_steps()
        old = run.summary()
        previous_wall = old.wall_s if old is not None else 0.0
    method.restore(attempts, steps)

    def summary(finished: bool) -> Summary:
        first = next((a.k for a in attempts if a.passed), None)
        return Summary(
            problem_id=problem.id,
            method=config.method,
            variant=config.variant,
            seed=config.seed,
            discovered=first is not None,
            discovery_k=first,
            attempts_used=len(attempts),
            budget=config.budget,
            wall_s=previous_wall + time.monotonic() - started,
            finished=finished,
            best_tests_passed=max((a.tests_passed for a in attempts), default=0),
            tests_total=max((a.tests_total for a in attempts), default=0),
            **method.summary_diagnostics(steps),
        )

    def done() -> bool:
        discovered = any(a.passed for a in attempts)
        return len(attempts) >= config.budget or (discovered and not config.continue_after_discovery)

    step = steps[-1].step + 1 if steps else 0
    try:
        while not done():
            step_started = time.monotonic()
            was_discovered = any(a.passed for a in attempts)
            num = min(method.batch_size(), config.budget - len(attempts))
            outcome = method.run_step(step, num, last_batch=len(attempts) + num >= config.budget)
            record = outcome.record
            record.time_step_s = time.monotonic() - step_started
            record.sampled_tokens = sum(len(a.token_ids) for a in outcome.attempts)
            record.prompt_tokens = sum(len(a.prompt_ids) for a in outcome.attempts)
            records = attempt_records(outcome.attempts, step, len(attempts) + 1, record)
            method.record_attempts(records, outcome.attempts)
            stop_point("attempts-written")
            attempts.extend(records)
            passing = next((r for r in records if r.passed), None)
            if passing is not None and not was_discovered:
                run.write_solution(passing.code or passing.response)
                method.on_discovery()
            record.step = step
            record.attempts = len(attempts)
            record.verdicts = dict(Counter(r.verdict.value for r in records))
            record.best_tests_passed = max((a.tests_passed for a in attempts), default=0)
            method.annotate_step(record, outcome.attempts)
            method.save_state(step)
            run.append_step(record)
            stop_point("step-recorded")
            steps.append(record)
            current = summary(finished=False)
            run.write_summary(current)
            if progress is not None:
                progress(record, current)
            step += 1
    finally:
        method.close()
    final = summary(finished=True)
    run.write_summary(final)
    return final

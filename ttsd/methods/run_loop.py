"""The run loop every method shares: the run directory, the judge, attempt records, the step loop's
bookkeeping (budget, discovery, resume) and the progress callback.

A method implements `Method.run_step(step, num_attempts, last_batch)`, a generator that yields
requests (`ttsd.methods.requests`: sample, judge, learn) and returns a `StepOutcome`; `run_steps`
is the run's loop, a generator too, which a scheduler (`ttsd.methods.scheduler`) drives, alone for
`ttsd solve` or beside other runs for `ttsd bench --concurrent`. The loop numbers attempts
(k = 1, 2, ... in order within a batch), stops at discovery (unless `continue_after_discovery`) or
when the budget is spent, writes attempts before the step record, and calls `save_state` before
the step record so that a completed step can always be resumed.

What a method holds on the engine (sampler, judge pool, base model) belongs to the `engine` it was
given (`ttsd.methods.scheduler.SharedEngine`); what is its own (prompt, history, adapter,
optimizer, teacher, RNG) lives on the method, so runs sharing an engine do not see each other.
What a method measures beyond that (sdpo's teacher gaps) it adds through `record_attempts`,
`annotate_step` and `summary_diagnostics`.

`last_batch` is True when the step's attempts spend the rest of the budget: nothing learnt from
them could be used, so a method skips its learning there (sdpo).

Costs: every attempt record carries its `AttemptCost` (ttsd.runs): its own sampled and prompt
tokens, and an even share of its step's wall seconds (sampling, judging, learning, sync: the
`time_step_s` of its StepRecord) and of the step's scored and trained tokens, which the method
reports on the StepRecord. Summed over a step's attempts they give the step's numbers exactly.
With runs sharing an engine, a step's wall seconds include its wait for the batches it shared.

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
from ttsd.methods.requests import JudgeRequest, SampleRequest, Step
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
    record: StepRecord  # timings and learning stats; attempts/verdicts are filled in by run_steps
    extra_files: dict[str, str] = field(default_factory=dict)


class Method:
    """A method's life cycle: `setup()`, `restore(...)`, then `run_step` per step, `save_state`, `close`.

    `engine`: what the method samples, judges and learns with (shared with other runs); None makes
    one of its own at `setup` (closed by `close`)."""

    def __init__(self, problem: Problem, config: SolveConfig, run: RunDir | None, model_path: Path, engine: Any = None) -> None:
        self.problem = problem
        self.config = config
        self.run = run
        self.model_path = model_path
        self.engine = engine
        self._own_engine = False
        self.judge = None

    def attach_engine(self) -> Any:
        """The engine (made here when none was given) and its judge for this run's feedback options, for `setup`."""
        if self.engine is None:
            from ttsd.methods.scheduler import SharedEngine

            self.engine = SharedEngine(self.config, self.model_path, learns=self.config.learns)
            self._own_engine = True
        self.judge = self.engine.judge_for(self.config.feedback_options())
        self._tokenizer = self.engine.tokenizer
        return self.engine

    def setup(self) -> None:
        """Take the engine and tokenize the prompt (`prepare`); sdpo adds its adapter and trainer."""
        self.attach_engine()
        self.prepare()
        self.engine.require_context(self.max_model_len)

    def prepare(self) -> None:
        """Set `self.prompt_ids` (what `context_length` measures); needs only the tokenizer."""
        from ttsd.engine.chat import chat_prompt_ids
        from ttsd.prompts import student_messages

        self.prompt_ids = chat_prompt_ids(self.tokenizer, student_messages(self.problem, self.config.templates))

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
        `prepare` before the sampler) + max_tokens; see `ttsd.config.context_length`."""
        from ttsd.config import context_length

        return context_length(len(self.prompt_ids), self.config.max_tokens, self.config.max_model_len, self.model_limit())

    @functools.cached_property
    def max_model_len(self) -> int:
        """`context_length()`, worked out once (it reads the model's config)."""
        return self.context_length()

    def sampling_settings(self) -> SamplingSettings:
        """How this run samples; the seed is per request (`SampleRequest.seed`)."""
        config = self.config
        return SamplingSettings(temperature=config.temperature, top_p=config.top_p, max_tokens=config.max_tokens)

    def adapter(self) -> str | None:
        """The LoRA adapter this run samples from (None: the base weights)."""
        return None

    def restore(self, attempts: list[AttemptRecord], steps: list[StepRecord]) -> None:
        """Bring the method's state to the end of the completed steps (default: nothing to do)."""

    def run_step(self, step: int, num_attempts: int, last_batch: bool = False) -> Step[StepOutcome]:
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
    ) -> Step[tuple[list[Attempt], float, float]]:
        """Draw this step's attempts (seeded by `step_seed`, or `seed` when given) and judge them.
        Returns the attempts and the seconds spent waiting for the samples and the verdicts (with
        other runs sharing the engine, that includes their share of the batch)."""
        t0 = time.monotonic()
        samples = yield SampleRequest(
            list(prompt_ids), n=num_attempts, seed=step_seed(self.config.seed, step) if seed is None else seed,
            settings=self.sampling_settings(), adapter=self.adapter(),
        )
        t1 = time.monotonic()
        judgements = yield JudgeRequest(
            self.problem, [s.text for s in samples], [s.finish_reason for s in samples], feedback=self.config.feedback_options()
        )
        attempts = [
            Attempt(s.text, list(s.token_ids), list(s.logprobs), s.finish_reason, list(prompt_ids), j)
            for s, j in zip(samples, judgements)
        ]
        return attempts, t1 - t0, time.monotonic() - t1

    def close(self) -> None:
        """Give back what is this run's own; an engine made by `setup` is closed too."""
        if self._own_engine and self.engine is not None:
            self.engine.close()
            self.engine = None


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


def run_steps(method: Method, resume: bool, progress: Progress | None = None) -> Step[Summary]:
    """The run's loop as a generator of requests (see the module docstring); returns the final
    summary. `method` is set up; it is closed when the loop ends, however it ends."""
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
            outcome = yield from method.run_step(step, num, last_batch=len(attempts) + num >= config.budget)
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

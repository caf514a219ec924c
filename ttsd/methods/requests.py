"""What a method's step asks for: the requests a step yields and the scheduler fulfils.

A step is a generator (`Method.run_step`): it reads top to bottom and, where it needs the engine,
yields a request and gets the answer back from the `yield`:

    samples = yield SampleRequest(prompt_ids, n=16, seed=step_seed(seed, step), settings=..., adapter=...)
    judgements = yield JudgeRequest(problem, [s.text for s in samples], [s.finish_reason for s in samples])
    result = yield LearnRequest(lambda: learn_from_batch(...), adapter=...)

`ttsd.methods.scheduler.Scheduler` drives many such generators at once and batches what they ask
for (one sampler call for every waiting run's SampleRequest, one judge pool for every
JudgeRequest, learning one run at a time); with one run it is `ttsd solve`. Plain data, nothing heavy
imported: methods depend on this module, the scheduler on the methods.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar, Union

from ttsd.engine.types import SamplingSettings

T = TypeVar("T")


@dataclass
class SampleRequest:
    """n samples of one prompt, sample j drawn with seed `seed + j` (the answer: list[Sample]).
    `settings.seed` is not used: the seed is the request's.

    `adapter`: the name of the run's LoRA adapter on the shared policy (`Policy.student`), None for
    the base weights. Requests with equal settings, n and adapter go to the engine in one call."""

    prompt_ids: list[int]
    n: int
    seed: int
    settings: SamplingSettings
    adapter: str | None = None


@dataclass
class JudgeRequest:
    """Judge these responses to `problem` (the answer: list[Judgement], in order), the feedback
    showing what `feedback` says (runs of one bench may differ: `--variants`)."""

    problem: Any  # ttsd.problems.Problem
    responses: list[str]
    finish_reasons: list[str]
    feedback: Any = None  # ttsd.judge.FeedbackOptions; None: all of it


@dataclass
class LearnRequest:
    """Run `learn()` on the trainer: one run at a time, while the sampler sleeps, after which the
    sampler serves the new weights of `adapter` (the answer: `LearnAnswer`)."""

    learn: Callable[[], Any]
    adapter: str | None = None


@dataclass
class LearnAnswer:
    result: Any  # what `learn()` returned
    time_sync_s: float  # giving the engine its memory back and sending it the new adapter


Request = Union[SampleRequest, JudgeRequest, LearnRequest]
Step = Generator[Request, Any, T]

"""multi-turn: one attempt per turn, every earlier feedback in the prompt (oldest dropped first past
`context_limit` tokens, recorded in the step's `extra`), or, with `multi_turn_chat`, the attempts and
their feedback alternating as chat turns.

Its prompts: the question, then the feedback template holding every earlier feedback, oldest first,
joined by blank lines, then "Correctly solve the original question." (`multi_turn_messages`); or as
a conversation, assistant attempts alternating with user feedback (`chat_turn_messages`). `fit_*`
drop the oldest feedback first until a token limit is met.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ttsd.engine.chat import Messages, Role
from ttsd.methods.run_loop import Method, StepOutcome
from ttsd.methods.requests import Step
from ttsd.prompts import DEFAULT_TEMPLATES, PromptTemplates, chat_messages, strip_thinking, student_messages, task_prompt
from ttsd.runs import AttemptRecord, StepRecord

if TYPE_CHECKING:
    from ttsd.problems.model import Problem


def multi_turn_messages(
    problem: Problem, feedbacks: Sequence[str], templates: PromptTemplates = DEFAULT_TEMPLATES
) -> Messages:
    """The multi-turn baseline's prompt: the question, every earlier feedback (oldest first), the ask.

    With no feedback it is the student prompt.
    """
    kept = [f.strip() for f in feedbacks if f and f.strip()]
    if not kept:
        return student_messages(problem, templates)
    content = templates.reprompt.format(
        prompt=task_prompt(problem, templates),
        solution="",
        feedback=templates.feedback.format(feedback_raw="\n\n".join(kept)),
    )
    return chat_messages(templates, ("user", content))


def chat_turn_messages(
    problem: Problem,
    attempts: Sequence[str],
    feedbacks: Sequence[str],
    templates: PromptTemplates = DEFAULT_TEMPLATES,
) -> Messages:
    """The multi-turn baseline as a conversation: question, then (attempt, feedback) turns, oldest first.

    Earlier attempts go in with their thinking stripped (as reasoning models' templates do).
    """
    if len(attempts) != len(feedbacks):
        raise ValueError(f"{len(attempts)} attempts but {len(feedbacks)} feedbacks")
    turns: list[tuple[Role, str]] = [("user", task_prompt(problem, templates))]
    for attempt, feedback in zip(attempts, feedbacks):
        turns.append(("assistant", strip_thinking(attempt).strip()))
        turns.append(("user", templates.feedback_turn.format(feedback_raw=feedback.strip())))
    return chat_messages(templates, *turns)


@dataclass(frozen=True)
class FittedPrompt:
    """A prompt cut to a token limit: `dropped` oldest items left out; `fits` False if even none fit."""

    messages: Messages
    dropped: int
    num_tokens: int
    fits: bool


def fit_to_token_limit(
    build: Callable[[int], Messages], num_items: int, max_tokens: int, count_tokens: Callable[[Messages], int]
) -> FittedPrompt:
    """The prompt `build(d)` with the fewest dropped oldest items d ∈ [0, num_items] within max_tokens.

    Dropping items never lengthens a prompt, so d is found by bisection: O(log n) token counts.
    """
    cache: dict[int, tuple[Messages, int]] = {}

    def measure(dropped: int) -> tuple[Messages, int]:
        if dropped not in cache:
            messages = build(dropped)
            cache[dropped] = (messages, count_tokens(messages))
        return cache[dropped]

    if measure(0)[1] <= max_tokens:
        low = 0
    elif measure(num_items)[1] > max_tokens:
        low = num_items
    else:
        too_many_kept, fits = 0, num_items  # invariant: build(too_many_kept) is too long, build(fits) fits
        while fits - too_many_kept > 1:
            middle = (too_many_kept + fits) // 2
            if measure(middle)[1] <= max_tokens:
                fits = middle
            else:
                too_many_kept = middle
        low = fits
    messages, num_tokens = measure(low)
    return FittedPrompt(messages=messages, dropped=low, num_tokens=num_tokens, fits=num_tokens <= max_tokens)


def fit_multi_turn_messages(
    problem: Problem,
    feedbacks: Sequence[str],
    max_tokens: int,
    count_tokens: Callable[[Messages], int],
    templates: PromptTemplates = DEFAULT_TEMPLATES,
) -> FittedPrompt:
    """`multi_turn_messages` dropping the oldest feedback first until the prompt has ≤ max_tokens.

    count_tokens: e.g. `lambda m: len(chat_prompt_ids(tokenizer, m))`.
    """
    feedbacks = list(feedbacks)
    return fit_to_token_limit(
        lambda d: multi_turn_messages(problem, feedbacks[d:], templates), len(feedbacks), max_tokens, count_tokens
    )


def fit_chat_turn_messages(
    problem: Problem,
    attempts: Sequence[str],
    feedbacks: Sequence[str],
    max_tokens: int,
    count_tokens: Callable[[Messages], int],
    templates: PromptTemplates = DEFAULT_TEMPLATES,
) -> FittedPrompt:
    """`chat_turn_messages` dropping the oldest (attempt, feedback) pairs first to fit max_tokens."""
    attempts, feedbacks = list(attempts), list(feedbacks)
    if len(attempts) != len(feedbacks):
        raise ValueError(f"{len(attempts)} attempts but {len(feedbacks)} feedbacks")
    return fit_to_token_limit(
        lambda d: chat_turn_messages(problem, attempts[d:], feedbacks[d:], templates),
        len(attempts),
        max_tokens,
        count_tokens,
    )


class MultiTurn(Method):
    def prepare(self) -> None:
        self.history: list[tuple[str, str]] = []  # (response, feedback) of earlier failed turns

    def context_length(self) -> int:
        """The prompt grows with feedback up to context_limit tokens, or up to what max_model_len (by
        default the model's own context) leaves beside max_tokens; the first prompt must fit."""
        from ttsd.config import context_length

        config, limit = self.config, self.model_limit()
        first, _ = self.prompt(prompt_limit=config.context_limit)  # no feedback yet: the question alone
        context_length(len(first), config.max_tokens, config.max_model_len, limit)  # raises if even it does not fit
        ceiling = config.max_model_len or limit
        longest = config.context_limit if ceiling is None else min(config.context_limit, ceiling - config.max_tokens)
        return context_length(longest, config.max_tokens, config.max_model_len, limit)

    def batch_size(self) -> int:
        return 1

    def restore(self, attempts: list[AttemptRecord], steps: list[StepRecord]) -> None:
        self.history = [(a.response, a.feedback) for a in attempts if not a.passed]

    def prompt_limit(self) -> int:
        """Prompt tokens allowed: the context limit, and room for the answer within the sampler's
        context length (vLLM refuses a prompt + max_tokens beyond its max_model_len)."""
        return min(self.config.context_limit, self.max_model_len - self.config.max_tokens)

    def prompt(self, prompt_limit: int | None = None) -> tuple[list[int], int]:
        """Token ids of this turn's prompt and how many of the oldest feedbacks were dropped."""
        from ttsd.engine.chat import chat_prompt_ids

        tokenizer = self.tokenizer
        count = lambda messages: len(chat_prompt_ids(tokenizer, messages))  # noqa: E731
        limit, templates = prompt_limit or self.prompt_limit(), self.config.templates
        if self.config.multi_turn_chat:
            fitted = fit_chat_turn_messages(
                self.problem, [r for r, _ in self.history], [f for _, f in self.history], limit, count, templates
            )
        else:
            fitted = fit_multi_turn_messages(self.problem, [f for _, f in self.history], limit, count, templates)
        return chat_prompt_ids(tokenizer, fitted.messages), fitted.dropped

    def run_step(self, step: int, num_attempts: int, last_batch: bool = False) -> Step[StepOutcome]:
        prompt_ids, dropped = self.prompt()
        attempts, time_sample, time_judge = yield from self.sample_and_judge(prompt_ids, step, num_attempts)
        for attempt in attempts:
            if not attempt.judgement.passed:
                self.history.append((attempt.response, attempt.judgement.feedback))
        record = StepRecord(
            step=step, attempts=0, time_sample_s=time_sample, time_judge_s=time_judge,
            extra={"prompt_tokens": len(prompt_ids), "feedback_dropped": dropped},
        )
        return StepOutcome(attempts, record)

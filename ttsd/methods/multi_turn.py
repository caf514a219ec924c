"""multi-turn: one attempt per turn, every earlier feedback in the prompt (oldest dropped first past
`context_limit` tokens, recorded in the step's `extra`), or, with `multi_turn_chat`, the attempts and
their feedback alternating as chat turns."""

from __future__ import annotations

from ttsd.methods.base import Method, StepOutcome
from ttsd.runs import AttemptRecord, StepRecord


class MultiTurn(Method):
    def setup(self) -> None:
        self.make_judge()
        self.history: list[tuple[str, str]] = []  # (response, feedback) of earlier failed turns
        self.sampler = self.make_sampler()

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
        self.history = [(a.response, a.feedback) for a in attempts if a.verdict != "accepted"]

    def prompt_limit(self) -> int:
        """Prompt tokens allowed: the context limit, and room for the answer within the sampler's
        context length (vLLM refuses a prompt + max_tokens beyond its max_model_len)."""
        return min(self.config.context_limit, self.max_model_len - self.config.max_tokens)

    def prompt(self, prompt_limit: int | None = None) -> tuple[list[int], int]:
        """Token ids of this turn's prompt and how many of the oldest feedbacks were dropped."""
        from ttsd.engine.chat import chat_prompt_ids
        from ttsd.sdpo.prompts import fit_chat_turn_messages, fit_multi_turn_messages

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

    def run_step(self, step: int, num_attempts: int) -> StepOutcome:
        prompt_ids, dropped = self.prompt()
        attempts, time_sample, time_judge = self.sample_and_judge(prompt_ids, step, num_attempts)
        for attempt in attempts:
            if not attempt.judgement.passed:
                self.history.append((attempt.response, attempt.judgement.feedback))
        record = StepRecord(
            step=step, attempts=0, time_sample_s=time_sample, time_judge_s=time_judge,
            extra={"prompt_tokens": len(prompt_ids), "feedback_dropped": dropped},
        )
        return StepOutcome(attempts, record)

"""best-of-k: independent samples from the unchanged model, `batch_size` at a time, until discovery."""

from __future__ import annotations

import time

from ttsd.methods.base import Method, StepOutcome, step_seed
from ttsd.runs import StepRecord


class BestOfK(Method):
    def setup(self) -> None:
        from ttsd.engine.chat import chat_prompt_ids
        from ttsd.sdpo.prompts import student_messages

        self.make_judge()
        self.sampler = self.make_sampler()
        self.prompt_ids = chat_prompt_ids(self.tokenizer, student_messages(self.problem, self.config.templates))

    def run_step(self, step: int, num_attempts: int) -> StepOutcome:
        config = self.config
        t0 = time.monotonic()
        samples = self.sampler.sample(
            [self.prompt_ids], n=num_attempts, temperature=config.temperature, top_p=config.top_p,
            max_tokens=config.max_tokens, seed=step_seed(config.seed, step),
        )[0]
        t1 = time.monotonic()
        attempts = self.judge_samples([self.prompt_ids] * len(samples), samples)
        t2 = time.monotonic()
        return StepOutcome(attempts, StepRecord(step=step, attempts=0, time_sample_s=t1 - t0, time_judge_s=t2 - t1))

    def close(self) -> None:
        super().close()
        sampler = getattr(self, "sampler", None)
        if sampler is not None:
            sampler.close()

"""best-of-k: independent samples from the unchanged model, `batch_size` at a time, until discovery."""

from __future__ import annotations

from ttsd.methods.run_loop import Method, StepOutcome
from ttsd.runs import StepRecord


class BestOfK(Method):
    def setup(self) -> None:
        from ttsd.engine.chat import chat_prompt_ids
        from ttsd.prompts import student_messages

        self.make_judge()
        self.prompt_ids = chat_prompt_ids(self.tokenizer, student_messages(self.problem, self.config.templates))
        self.sampler = self.make_sampler()

    def run_step(self, step: int, num_attempts: int, last_batch: bool = False) -> StepOutcome:
        attempts, time_sample, time_judge = self.sample_and_judge(self.prompt_ids, step, num_attempts)
        return StepOutcome(attempts, StepRecord(step=step, attempts=0, time_sample_s=time_sample, time_judge_s=time_judge))

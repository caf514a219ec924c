"""best-of-k: independent samples from the unchanged model, `batch_size` at a time, until discovery."""

from __future__ import annotations

from ttsd.methods.requests import Step
from ttsd.methods.run_loop import Method, StepOutcome
from ttsd.runs import StepRecord


class BestOfK(Method):
    def run_step(self, step: int, num_attempts: int, last_batch: bool = False) -> Step[StepOutcome]:
        attempts, time_sample, time_judge = yield from self.sample_and_judge(self.prompt_ids, step, num_attempts)
        return StepOutcome(attempts, StepRecord(step=step, attempts=0, time_sample_s=time_sample, time_judge_s=time_judge))

"""The judge: extract the program from a response, run it on the tests, give a verdict and feedback.

Owner: judge helper. Contract (keep these names): `Verdict`, `Judgement`, `extract_code`, `Judge`.

    judge = Judge(make_sandbox("local"), max_workers=4)
    j = judge.judge(problem, response_text, finish_reason="stop")
    js = judge.judge_many(problem, responses, finish_reasons)   # bounded concurrent pool, order kept
"""

from __future__ import annotations

from enum import Enum

from pydantic import BaseModel


class Verdict(str, Enum):
    accepted = "accepted"
    wrong_answer = "wrong_answer"
    runtime_error = "runtime_error"
    time_limit = "time_limit"
    memory_limit = "memory_limit"
    output_limit = "output_limit"
    format_error = "format_error"
    truncated = "truncated"


class Judgement(BaseModel):
    verdict: Verdict
    tests_passed: int = 0
    tests_total: int = 0
    feedback: str = ""  # empty when accepted; the text shown to the self-teacher / multi-turn prompt
    code: str | None = None  # the extracted program
    wall_s: float = 0.0

    @property
    def passed(self) -> bool:
        return self.verdict == Verdict.accepted

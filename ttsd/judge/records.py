"""What judging produces: the verdicts, a judgement, and the record of each test that ran."""

from __future__ import annotations

from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ttsd.problems.model import TestCase


class Verdict(str, Enum):
    accepted = "accepted"
    wrong_answer = "wrong_answer"
    runtime_error = "runtime_error"
    time_limit = "time_limit"
    memory_limit = "memory_limit"
    output_limit = "output_limit"
    format_error = "format_error"
    truncated = "truncated"


class TestResult(BaseModel):
    """How one test went (no test content: safe to log next to hidden tests)."""

    __test__ = False  # not a pytest class

    index: int  # position in problem.tests (visible) or problem.hidden_tests (hidden)
    hidden: bool
    verdict: Verdict  # accepted when it passed
    wall_s: float = 0.0


class Judgement(BaseModel):
    verdict: Verdict
    tests_passed: int = 0
    tests_total: int = 0
    feedback: str = ""  # empty when accepted; the text shown to the self-teacher / multi-turn prompt
    code: str | None = None  # the extracted program
    wall_s: float = 0.0
    test_results: list[TestResult] = Field(default_factory=list)  # the tests that ran, in order

    @property
    def passed(self) -> bool:
        return self.verdict == Verdict.accepted


class ErrorInfo(BaseModel):
    """An exception reported by the harness (or a crash seen from outside)."""

    model_config = ConfigDict(extra="ignore")

    type: str = ""
    message: str = ""
    line: int | None = None
    function: str | None = None
    source: str | None = None
    where: str | None = None  # "solution" | "test" | None
    phase: str = "run"  # "load": the program failed before any test input mattered
    traceback: str = ""
    last_call: str | None = None  # assert problems: the last call of the candidate
    last_result: str | None = None


class TestRun(BaseModel):
    """Everything about one executed test, for the verdict and the feedback."""

    __test__ = False

    index: int
    hidden: bool
    verdict: Verdict
    input: str
    kind: str = "stdin"
    expected: str = ""
    output: str = ""  # what is shown as "Output": stdout (stdin) or the returned value (functional)
    stdout: str = ""  # what the program printed (for functional problems: besides its return value)
    stderr: str = ""
    error: ErrorInfo | None = None
    detail: str = ""  # one line on why, when there is no exception (exit code, signal, limit)
    wall_s: float = 0.0
    time_limit_s: float = 0.0
    suite_cut: bool = False  # the time limit hit was the whole suite's, not this test's
    time_limit_hit: str | None = None  # the sandbox's: "cpu" (CPU time limit) or "wall" (wall-clock backstop)

    @property
    def passed(self) -> bool:
        return self.verdict == Verdict.accepted


class PreparedTest(BaseModel):
    """One test ready to run: what enters the sandbox, and what its output is compared with outside."""

    __test__ = False

    index: int
    hidden: bool
    test: TestCase
    stdin: str  # what enters the sandbox: the input only, never the expected output
    expected_value: Any = None
    arguments: Any = None  # evalplus: the encoded argument list sent to the harness
    shown_input: str | None = None  # evalplus: the input as feedback shows it (the call)
    accepted_values: list[Any] = Field(default_factory=list)  # evalplus: also_accepted, decoded

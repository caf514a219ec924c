"""stdin, functional and assert tests: each runs in a fresh sandboxed process, with the problem's limit.

* stdin: the input is the program's stdin; its stdout is compared as text (`lines_match`).
* functional: each input line is one JSON argument; the program's `Solution().<entry>` (or its
  top-level function) is called and the value it returned is compared (`values_match`).
* assert (HumanEval): the program, then the test code, then `check(<entry>)`, all inside the
  sandbox (the test code holds the expectations).
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from pydantic import BaseModel

from ttsd.judge.comparison import decode_value, lines_match, parse_arguments, show_value, values_match
from ttsd.judge.records import ErrorInfo, PreparedTest, TestRun, Verdict
from ttsd.judge.sandboxed import exit_detail, harness_job, output_limit_for, ran_out_of_time, split_report
from ttsd.problems.model import Problem, TestCase
from ttsd.sandbox.base import ExecResult, Sandbox


def prepare_test(name: str, problem: Problem, index: int, hidden: bool, test: TestCase) -> PreparedTest:
    """What enters the sandbox for one test; ValueError (naming the test) for a broken one."""
    if problem.kind == "stdin":
        return PreparedTest(index=index, hidden=hidden, test=test, stdin=test.input)
    if problem.kind == "assert":
        return PreparedTest(index=index, hidden=hidden, test=test, stdin=json.dumps({"test": test.input}))
    try:
        arguments = parse_arguments(test.input)
    except ValueError as exc:
        raise ValueError(f"{name}: an input line is not JSON ({exc})") from None
    try:
        expected_value = json.loads(test.output)
    except ValueError as exc:
        raise ValueError(f"{name}: the expected output is not JSON ({exc})") from None
    payload = json.dumps({"args": arguments})
    return PreparedTest(index=index, hidden=hidden, test=test, stdin=payload, expected_value=expected_value)


def run_test(
    sandbox: Sandbox, problem: Problem, code: str, item: PreparedTest, time_limit_s: float, output_limit_bytes: int
) -> TestRun:
    """Run one test in its own process; a time limit below the problem's is the suite's remainder,
    so running out of it is the suite's time limit (`suite_cut`)."""
    nonce = secrets.token_hex(16)
    if problem.kind == "stdin":
        mode, stdin = ["stdin", nonce], item.stdin
    else:  # the nonce comes first on stdin: it is in no file, argument or environment variable
        mode, stdin = [problem.kind, str(problem.entry_point)], nonce + "\n" + item.stdin
    job = harness_job(
        code, mode, stdin, time_limit_s=time_limit_s, memory_limit_mb=problem.memory_limit_mb,
        output_limit_bytes=output_limit_for(output_limit_bytes, len(item.test.output.encode())),
    )
    result = sandbox.run(job)
    outcome = classify(problem.kind, result, nonce, item.test.output, item.expected_value)
    return TestRun(
        index=item.index,
        hidden=item.hidden,
        verdict=outcome.verdict,
        kind=problem.kind,
        input=item.test.input,
        expected=item.test.output,
        output=outcome.output,
        stdout=outcome.stdout,
        stderr=outcome.stderr,
        error=outcome.error,
        detail=outcome.detail,
        wall_s=result.wall_s,
        time_limit_s=time_limit_s,
        suite_cut=outcome.verdict == Verdict.time_limit and time_limit_s < problem.time_limit_s,
        time_limit_hit=result.time_limit_hit,
    )


class Outcome(BaseModel):
    """What one run amounts to: the verdict and what the feedback may show."""

    verdict: Verdict
    output: str = ""  # shown as "Output": stdout (stdin problems) or the returned value (functional)
    stdout: str = ""  # what the program printed, the harness's report removed
    stderr: str = ""
    error: ErrorInfo | None = None
    detail: str = ""


def classify(kind: str, result: ExecResult, nonce: str, expected: str, expected_value: Any = None) -> Outcome:
    """The verdict of one run from its raw ExecResult.

    Limits first (time, output, memory), then the harness's error report or the exit status,
    then the comparison with the expected output, which never entered the sandbox.
    """
    # A stdin program's stdout is graded as it is; only the other kinds carry a report there.
    stdout, result_record = (result.stdout, None) if kind == "stdin" else split_report(result.stdout, nonce)
    stderr, error_record = split_report(result.stderr, nonce)
    error = ErrorInfo.model_validate(error_record) if error_record and error_record.get("status") == "error" else None
    seen = {"output": stdout if kind == "stdin" else "", "stdout": stdout, "stderr": stderr, "error": error}
    if ran_out_of_time(result):
        return Outcome(verdict=Verdict.time_limit, **seen)
    if result.output_truncated:
        return Outcome(verdict=Verdict.output_limit, **seen)
    finished = result.exit_code == 0 and error is None and (kind == "stdin" or result_record is not None)
    if not finished:
        # A memory flag only explains a run that failed: a program that ended cleanly with the right
        # answer is not failed for having printed "out of memory" to stderr.
        if result.memory_exceeded or (error is not None and error.type == "MemoryError"):
            return Outcome(verdict=Verdict.memory_limit, **seen)
        if error is not None:
            if kind == "assert" and error.type == "AssertionError" and error.where == "test":
                return Outcome(verdict=Verdict.wrong_answer, detail="assertion failed", **seen)
            return Outcome(verdict=Verdict.runtime_error, **seen)
        return Outcome(verdict=Verdict.runtime_error, detail=exit_detail(result.exit_code), **seen)
    if kind == "stdin":
        same = lines_match(stdout, expected)
        return Outcome(verdict=Verdict.accepted if same else Verdict.wrong_answer, **seen)
    assert result_record is not None
    if kind == "assert":
        passed = result_record.get("status") == "passed"
        return Outcome(verdict=Verdict.accepted if passed else Verdict.runtime_error, **seen)
    try:
        value = decode_value(result_record["value"])
    except (KeyError, TypeError, ValueError, RecursionError):
        return Outcome(verdict=Verdict.runtime_error, detail="the returned value could not be read", **seen)
    seen["output"] = show_value(value)
    same = values_match(value, expected_value)
    return Outcome(verdict=Verdict.accepted if same else Verdict.wrong_answer, **seen)

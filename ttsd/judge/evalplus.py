"""evalplus (MBPP+) tests: the program is loaded once and `<entry>` called on every test's arguments
in ONE sandboxed process (the harness's `calls` mode), each call with the per-test limit; the
returned values are compared as EvalPlus does (`evalplus_match`). One process per test would cost a
process start per input, and MBPP+ problems have a hundred inputs each.

`run_calls` and `call_reports` are also how the MBPP+ importer computes expected outputs from a
canonical solution.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from typing import Any

from ttsd.judge.comparison import decode_value, evalplus_match, show_call, show_value
from ttsd.judge.records import ErrorInfo, PreparedTest, TestRun, Verdict
from ttsd.judge.sandboxed import exit_detail, harness_job, output_limit_for, ran_out_of_time
from ttsd.problems.model import Problem, TestCase
from ttsd.sandbox.base import ExecResult, Sandbox


def prepare_evalplus(name: str, problem: Problem, index: int, hidden: bool, test: TestCase) -> PreparedTest:
    """The decoded arguments and expected values of one test; ValueError (naming the test) for a broken one."""
    try:
        arguments = json.loads(test.input)
        expected = decode_value(json.loads(test.output))
        accepted = [decode_value(json.loads(text)) for text in test.also_accepted or []]
        shown = show_call(str(problem.entry_point), decode_value(arguments))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name}: not in the evalplus value encoding ({exc})") from None
    if not isinstance(arguments, list):
        raise ValueError(f"{name}: the input must be a JSON array of arguments")
    return PreparedTest(
        index=index, hidden=hidden, test=test, stdin="", expected_value=expected, arguments=arguments,
        shown_input=shown, accepted_values=accepted,
    )


def run_batch(
    sandbox: Sandbox, problem: Problem, code: str, items: list[PreparedTest], time_limit_s: float, output_limit_bytes: int
) -> list[TestRun]:
    """Run `items` in one process with at most `time_limit_s` for all of them: one run per call,
    up to the call the process ended on."""
    call_limit = min(problem.time_limit_s, time_limit_s)
    result, nonce = run_calls(
        sandbox, code, str(problem.entry_point), [item.arguments for item in items],
        call_time_limit_s=call_limit, time_limit_s=time_limit_s, memory_limit_mb=problem.memory_limit_mb,
        output_limit_bytes=output_limit_for(output_limit_bytes, sum(len(i.test.output.encode()) for i in items)),
    )
    return classify_calls(problem, items, result, nonce, per_call_limit_s=call_limit)


def run_calls(
    sandbox: Sandbox,
    code: str,
    entry_point: str,
    calls: Sequence[Any],
    *,
    call_time_limit_s: float,
    time_limit_s: float,
    memory_limit_mb: int = 1024,
    output_limit_bytes: int = 4 << 20,
) -> tuple[ExecResult, str]:
    """Run `code`'s `entry_point` on every encoded argument list in one sandboxed process (the
    harness's `calls` mode): (the raw result, the nonce its report lines carry; see `call_reports`).
    call_time_limit_s bounds each call (0: no bound), time_limit_s the whole process."""
    nonce = secrets.token_hex(16)
    payload = {"calls": list(calls), "time_limit_s": call_time_limit_s}
    job = harness_job(
        code, ["calls", entry_point], nonce + "\n" + json.dumps(payload), time_limit_s=time_limit_s,
        memory_limit_mb=memory_limit_mb, output_limit_bytes=output_limit_bytes,
    )
    return sandbox.run(job), nonce


def call_reports(stdout: str, nonce: str) -> tuple[list[dict], list[str]]:
    """The harness's `NONCE {json}` report lines of a batch, in order, and what the program printed
    before each of them (the last piece: after the last report)."""
    reports: list[dict] = []
    printed: list[str] = []
    piece: list[str] = []
    marker = nonce + " "
    for line in stdout.split("\n"):
        if line.startswith(marker):
            try:
                record = json.loads(line[len(marker) :])
            except ValueError:
                record = None
            if isinstance(record, dict):
                reports.append(record)
                printed.append("\n".join(piece))
                piece = []
                continue
        piece.append(line)
    printed.append("\n".join(piece))
    return reports, printed


def classify_calls(
    problem: Problem, items: Sequence[PreparedTest], result: ExecResult, nonce: str, per_call_limit_s: float
) -> list[TestRun]:
    """The runs of one evalplus batch: one per reported call, then (when the batch ended early) one
    for the call it ended on, with the reason (time, output or memory limit, crash)."""
    reports, printed = call_reports(result.stdout, nonce)
    runs: list[TestRun] = []
    for position, item in enumerate(items):
        report = reports[position] if position < len(reports) else None
        base = dict(
            index=item.index, hidden=item.hidden, kind=problem.kind, input=item.shown_input or item.test.input,
            expected=_show_expected(problem, item.expected_value), stdout=printed[position] if report else printed[-1],
            time_limit_s=per_call_limit_s,
        )
        if report is None or report.get("index") != position:
            runs.append(_batch_end(result, base))
            break
        status = report.get("status")
        if status == "timeout":
            runs.append(TestRun(verdict=Verdict.time_limit, detail="this call ran past its time limit", **base))
            break
        if status == "error":
            error = ErrorInfo.model_validate(report)
            verdict = Verdict.memory_limit if error.type == "MemoryError" else Verdict.runtime_error
            runs.append(TestRun(verdict=verdict, error=error, **base))
            if error.phase == "load":
                break
            continue
        try:
            value = decode_value(report["value"])
        except (KeyError, TypeError, ValueError, RecursionError):
            runs.append(TestRun(verdict=Verdict.runtime_error, detail="the returned value could not be read", **base))
            continue
        same = evalplus_match(
            value, item.expected_value, atol=problem.atol or 0.0, output_match=problem.output_match or "equal",
            also_accepted=item.accepted_values,
        )
        runs.append(TestRun(verdict=Verdict.accepted if same else Verdict.wrong_answer, output=show_value(value), **base))
    first_failure = next((run for run in runs if run.verdict != Verdict.accepted), None)
    if first_failure is not None and result.stderr.strip():
        first_failure.stderr = result.stderr  # the batch's stderr cannot be told apart per call
    return runs


def _batch_end(result: ExecResult, base: dict) -> TestRun:
    """The run of the call a batch ended on without a report for it."""
    if ran_out_of_time(result):
        return TestRun(verdict=Verdict.time_limit, suite_cut=True, **base)
    if result.output_truncated:
        return TestRun(verdict=Verdict.output_limit, **base)
    if result.memory_exceeded:
        return TestRun(verdict=Verdict.memory_limit, **base)
    return TestRun(verdict=Verdict.runtime_error, detail=exit_detail(result.exit_code), **base)


def _show_expected(problem: Problem, expected: Any) -> str:
    if problem.output_match == "not_none":
        return "a value other than None" if expected else "None"
    if problem.output_match == "set":
        return show_value(expected) + " (in any order)"
    return show_value(expected)

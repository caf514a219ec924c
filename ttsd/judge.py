"""The judge: extract the program from a response, run it on the tests, give a verdict and feedback.

    judge = Judge(make_sandbox("local"), max_workers=4)
    j = judge.judge(problem, response_text, finish_reason="stop")
    js = judge.judge_many(problem, responses, finish_reasons)   # bounded concurrent pool, order kept

Semantics follow LiveCodeBench's `testing_util.py` (see `ttsd/judge_harness.py` for the part that
runs inside the sandbox):

* stdin: output and expected output are stripped, split into lines, each line stripped; equal when
  the line counts match and every line pair is equal as text or, failing that, as the lists of
  exact `Decimal`s of their whitespace-split fields (`lines_match`).
* functional: each input line is one JSON argument; the program's `Solution().<entry>` (or its
  top-level function) is called; a top-level tuple result becomes a list; the result must `==` the
  JSON-parsed expected output (`values_match`). Nested tuples are not converted (as in LCB).
* assert (HumanEval): the program, then the test code, then `check(<entry>)`.
* evalplus (MBPP+): the program is loaded once and `<entry>` called on every test's arguments in
  ONE process per group (visible, then hidden), each call with the per-test limit; results are
  compared as EvalPlus does (`evalplus_match`: ==, the problem's output_match and also_accepted,
  float tolerance atol / 1e-6).

Every test of the other kinds runs in a fresh sandboxed process with the problem's wall-clock limit; the whole suite
has its own limit (`Judge.suite_time_limit_s`). Only inputs enter the sandbox: the comparison with
the expected output happens here, outside, from the raw output or returned value, so nothing the
program does inside can fake a pass (assert problems excepted: their test code must run inside).

Order and early stops: visible tests first, then hidden ones. A failing visible test does not stop
the visible tests (the feedback may show the two shortest failures), but hidden tests are then not
run; judging stops at the first hidden failure (as LCB does), after a time limit (each further test
would cost a full limit), and after an error in loading a functional/assert program (every test
would fail the same way). So `tests_passed` counts passed tests among those run. The verdict is that
of the first failing test in that order.

Truncation convention (SDPO / LCB): a response that stopped because it hit the length limit
(`finish_reason == "length"`) is `truncated` and not run, even when it holds a complete code block;
the program found (if any) is still kept in `Judgement.code` for logs.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal, InvalidOperation
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ttsd.judge_harness import decode_value as harness_decode_value
from ttsd.problems.model import Problem, TestCase
from ttsd.sandbox.base import ExecResult, Job, Sandbox
from ttsd.sandbox.supervisor import WALL_BACKSTOP_FACTOR, wall_limit_s

HARNESS_FILE = "_ttsd_harness.py"
SOLUTION_FILE = "solution.py"
HARNESS_SOURCE = (Path(__file__).with_name("judge_harness.py")).read_text(encoding="utf-8")

FIELD_MAX_CHARS = 250
FIELD_MAX_LINES = 8
FEEDBACK_MAX_CHARS = 2000
CUT_MARK = " …[cut]"
MAX_WRONG_ANSWERS_SHOWN = 2
HIDDEN_FAILURE_FEEDBACK = "All visible tests passed, but a hidden test failed."


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


# ---------------------------------------------------------------------------------------------
# Extraction
# ---------------------------------------------------------------------------------------------

PYTHON_FENCE_LANGUAGES = {"", "python", "py", "python3", "py3"}
_FENCE_OPEN = re.compile(r"^\s*(`{3,})\s*([A-Za-z0-9_+.#-]*)[^`]*$")


class Extraction(BaseModel):
    """The program found in a response; `verdict` is set when the response cannot be judged."""

    code: str | None = None
    verdict: Verdict | None = None  # format_error or truncated; None when `code` should be run


def code_blocks(response: str) -> list[tuple[str, str]]:
    """Every closed fenced block as (language, code), in order. An unclosed block is ignored."""
    blocks: list[tuple[str, str]] = []
    lines = response.split("\n")
    i = 0
    while i < len(lines):
        opening = _FENCE_OPEN.match(lines[i])
        if not opening:
            i += 1
            continue
        fence, language = opening.group(1), opening.group(2).lower()
        for j in range(i + 1, len(lines)):
            stripped = lines[j].strip()
            if stripped.startswith(fence) and set(stripped) == {"`"}:
                blocks.append((language, "\n".join(lines[i + 1 : j])))
                i = j + 1
                break
        else:
            break  # unclosed: nothing after it can be a closed block either
    return blocks


def extract_code(response: str, finish_reason: str | None = "stop") -> Extraction:
    """The program in a model response: the longest ```python / ```py / bare ``` block.

    No such block → `format_error`. `finish_reason == "length"` → `truncated` (the code, if a
    complete block exists, is kept for logs but not judged).
    """
    candidates = [code for language, code in code_blocks(response) if language in PYTHON_FENCE_LANGUAGES]
    candidates = [code for code in candidates if code.strip()]
    code = max(candidates, key=len) if candidates else None
    if finish_reason == "length":
        return Extraction(code=code, verdict=Verdict.truncated)
    if code is None:
        return Extraction(code=None, verdict=Verdict.format_error)
    return Extraction(code=code, verdict=None)


def looks_like_response(text: str) -> bool:
    """True when `text` holds a fenced block (a model response), False for a bare program."""
    return any(_FENCE_OPEN.match(line) for line in text.split("\n"))


def _compiles(text: str) -> bool:
    """Whether `text` is valid Python (compiled only, never run; warnings silenced)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            compile(text, SOLUTION_FILE, "exec")
        except (SyntaxError, ValueError, MemoryError, RecursionError):
            return False
    return True


def program_from_text(text: str) -> Extraction:
    """A solution file's program: the file itself when it is a program, else extracted as from a
    response. Valid Python is a program even when a docstring holds fences; text with a fenced
    block that is not valid Python is a response; anything else is judged as written (a bare
    program with a syntax error gets a runtime error with its line, not a format error)."""
    if not text.strip():
        return Extraction(code=None, verdict=Verdict.format_error)
    if _compiles(text) or not looks_like_response(text):
        return Extraction(code=text, verdict=None)
    return extract_code(text, "stop")


# ---------------------------------------------------------------------------------------------
# Comparison (pure; LiveCodeBench semantics)
# ---------------------------------------------------------------------------------------------


def stripped_lines(text: str) -> list[str]:
    """`text.strip()` split on newlines, each line stripped (LCB `get_stripped_lines`)."""
    return [line.strip() for line in text.strip().split("\n")]


def decimals(line: str) -> list[Decimal] | None:
    """The whitespace-split fields of a line as exact Decimals, or None when one is not a number."""
    try:
        return [Decimal(field) for field in line.split()]
    except (InvalidOperation, ValueError):
        return None


def lines_match(output: str, expected: str) -> bool:
    """stdin comparison: same number of stripped lines, each equal as text or as exact Decimals.

    out ≡ exp  ⇔  |L(out)| = |L(exp)|  ∧  ∀i: L(out)_i = L(exp)_i  ∨  D(L(out)_i) = D(L(exp)_i)
    where L = stripped_lines and D = decimals (defined only when every field parses).
    """
    got, want = stripped_lines(output), stripped_lines(expected)
    if len(got) != len(want):
        return False
    for got_line, want_line in zip(got, want):
        if got_line == want_line:
            continue
        got_numbers, want_numbers = decimals(got_line), decimals(want_line)
        if got_numbers is None or want_numbers is None or got_numbers != want_numbers:
            return False
    return True


def values_match(value: Any, expected: Any) -> bool:
    """functional comparison: a top-level tuple becomes a list, then Python `==` (LCB)."""
    if isinstance(value, tuple):
        value = list(value)
    try:
        return bool(value == expected)
    except Exception:  # a comparison that raises is a mismatch, never a crash of the judge
        return False


EVALPLUS_FLOAT_ATOL = 1e-6  # EvalPlus's tolerance for float results of a problem whose atol is 0
EVALPLUS_RTOL = 1e-7  # np.allclose's relative tolerance as EvalPlus sets it


def _is_floats(value: Any) -> bool:
    """A float, or a non-empty list/tuple of floats only (EvalPlus's `is_floats`)."""
    if isinstance(value, float):
        return True
    return isinstance(value, (list, tuple)) and bool(value) and all(isinstance(item, float) for item in value)


def _all_close(value: Any, expected: Any, atol: float) -> bool:
    """np.allclose(value, expected, rtol=1e-7, atol) for numbers and equal-length nested sequences:
    |v - e| <= atol + rtol·|e| elementwise, infinities equal only to themselves, NaN to nothing."""
    numbers = (int, float)
    if isinstance(value, numbers) and isinstance(expected, numbers):
        if value == expected:  # also the infinities
            return True
        return abs(value - expected) <= atol + EVALPLUS_RTOL * abs(expected)
    if isinstance(value, (list, tuple)) and isinstance(expected, (list, tuple)) and len(value) == len(expected):
        return all(_all_close(v, e, atol) for v, e in zip(value, expected))
    return False


def evalplus_match(
    value: Any,
    expected: Any,
    *,
    atol: float = 0.0,
    output_match: str = "equal",
    also_accepted: Sequence[Any] = (),
) -> bool:
    """EvalPlus's verdict on one returned value (evalplus/eval: `unsafe_execute` with its MBPP
    special oracles, expressed as data: `output_match` and `also_accepted`).

    exact = value == expected, or, by output_match: set(value) == set(expected) (set); value ==
    expected when value is a bool, else expected == (value is not None) (not_none); True (any).
    exact or value equals one of also_accepted passes. Otherwise, with tol = atol, or 1e-6 when
    atol is 0 and the expected value is a float or a list of floats: tol > 0, the same type (and
    length), and allclose(value, expected, rtol=1e-7, atol=tol).
    """
    try:
        if output_match == "any":
            return True
        if output_match == "set":
            exact = set(value) == set(expected)
        elif output_match == "not_none":
            exact = value == expected if isinstance(value, bool) else expected == (value is not None)
        else:
            exact = bool(value == expected)  # no tuple-to-list here: EvalPlus compares as returned
        if exact or any(bool(value == other) for other in also_accepted):
            return True
        tolerance = atol or (EVALPLUS_FLOAT_ATOL if _is_floats(expected) else 0.0)
        if tolerance == 0 or type(value) is not type(expected):
            return False
        return _all_close(value, expected, tolerance)
    except Exception:  # a comparison that raises (an unhashable item in a set...) is a mismatch
        return False


def show_call(entry_point: str, arguments: Sequence[Any]) -> str:
    """An evalplus test's input as the call it makes: `f((3, 4), [1, 2])`."""
    return f"{entry_point}({', '.join(_show_argument(a) for a in arguments)})"


def _show_argument(value: Any) -> str:
    if isinstance(value, frozenset):  # arguments are plain sets to the function
        return repr(set(value)) if value else "set()"
    return repr(value)


def parse_arguments(test_input: str) -> list[Any]:
    """A functional test's arguments: one JSON value per non-blank input line."""
    return [json.loads(line) for line in test_input.split("\n") if line.strip()]


class _Opaque:
    """A returned object that is not plain data: shown by its repr, equal to nothing."""

    def __init__(self, type_name: str, text: str):
        self.type_name, self.text = type_name, text

    def __eq__(self, other: object) -> bool:
        return False

    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return self.text or f"<{self.type_name}>"


def decode_value(encoded: Any) -> Any:
    """Undo the harness's `encode_value`: tuples, sets (as frozensets), dicts and complex numbers
    come back as such, anything else the program returned as an opaque value equal to nothing."""
    return harness_decode_value(encoded, frozenset, _opaque)


def _opaque(record: dict) -> _Opaque:
    return _Opaque(str(record.get("$opaque", "object")), str(record.get("repr", "")))


def _is_plain_json(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, list):
        return all(_is_plain_json(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain_json(v) for k, v in value.items())
    return False


def show_value(value: Any) -> str:
    """A returned value as the model reads the expected output: JSON when JSON says it exactly
    (a tuple, a set or an int dict key would be blurred by JSON, so those are shown by repr)."""
    if _is_plain_json(value):
        try:
            return json.dumps(value)
        except (TypeError, ValueError):
            pass
    return repr(value)


# ---------------------------------------------------------------------------------------------
# One test run
# ---------------------------------------------------------------------------------------------


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


def _split_report(stream: str, nonce: str) -> tuple[str, dict | None]:
    """(the stream without the harness's report line, the report) — the LAST `NONCE {json}` line."""
    marker = f"\n{nonce} "
    at = stream.rfind(marker)
    if at < 0:
        return stream, None
    end = stream.find("\n", at + len(marker))
    end = len(stream) if end < 0 else end
    try:
        record = json.loads(stream[at + len(marker) : end])
    except ValueError:
        return stream, None
    rest = stream[:at] + stream[end + 1 :]
    return rest, record if isinstance(record, dict) else None


_SIGNALS = {
    6: "SIGABRT",
    9: "SIGKILL",
    11: "SIGSEGV (segmentation fault; often a too deep recursion)",
    25: "SIGXFSZ (a file grew too large)",
}
_SIGXCPU = 24  # the CPU-seconds rlimit: a time limit, whatever the backend reported


def _exit_detail(exit_code: int | None) -> str:
    if exit_code is None:
        return "the program was killed"
    if exit_code < 0 or exit_code > 128:
        signal_number = -exit_code if exit_code < 0 else exit_code - 128
        return f"the program was killed by signal {_SIGNALS.get(signal_number, signal_number)}"
    return f"the program exited with code {exit_code}"


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
    stdout, result_record = (result.stdout, None) if kind == "stdin" else _split_report(result.stdout, nonce)
    stderr, error_record = _split_report(result.stderr, nonce)
    error = ErrorInfo.model_validate(error_record) if error_record and error_record.get("status") == "error" else None
    seen = {"output": stdout if kind == "stdin" else "", "stdout": stdout, "stderr": stderr, "error": error}
    if result.timed_out or result.exit_code in (-_SIGXCPU, 128 + _SIGXCPU):
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
        detail = _exit_detail(result.exit_code)
        if result.exit_code == 0:
            detail = "the program ended before the test finished (did it call exit()?)"
        return Outcome(verdict=Verdict.runtime_error, detail=detail, **seen)
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


# ---------------------------------------------------------------------------------------------
# Feedback (pure)
# ---------------------------------------------------------------------------------------------


def clip_field(text: str, max_chars: int = FIELD_MAX_CHARS, max_lines: int = FIELD_MAX_LINES) -> str:
    """At most `max_lines` lines and `max_chars` characters of `text`, then a cut mark if cut."""
    text = text.rstrip("\n")
    lines = text.split("\n")
    cut = len(lines) > max_lines
    kept = "\n".join(lines[:max_lines])
    if len(kept) > max_chars:
        kept, cut = kept[:max_chars], True
    return kept + CUT_MARK if cut else kept


def clip_total(text: str, max_chars: int = FEEDBACK_MAX_CHARS) -> str:
    """The whole feedback cut to `max_chars` characters (cut mark included)."""
    if len(text) <= max_chars:
        return text
    return text[: max_chars - len(CUT_MARK)] + CUT_MARK


def _field(name: str, text: str) -> str:
    return f"{name}:\n{clip_field(text) if text.strip() else '(nothing)'}"


def _error_lines(error: ErrorInfo) -> list[str]:
    lines = [clip_field(f"{error.type}: {error.message}" if error.message else error.type)]
    if error.line is not None:
        where = "" if error.where != "test" else " of the test code"
        function = error.function if error.function and error.function != "<module>" else None
        place = f"Line {error.line}{where}" + (f" in {function}" if function else "")
        lines.append(clip_field(place + (f": {error.source}" if error.source else "")))
    return lines


def _printed_fields(run: TestRun) -> list[str]:
    """What the program printed, for debugging: its stdout and stderr when not empty."""
    fields = []
    if run.stdout.strip():
        fields.append(_field("Printed Output", run.stdout))
    if run.stderr.strip():
        fields.append(_field("Stderr", run.stderr))
    return fields


def _input_field(run: TestRun) -> str:
    if run.error and run.error.last_call:
        return _field("Last Executed Input", run.error.last_call)
    return _field("Last Executed Input", run.input)


def _describe_runtime_error(run: TestRun, memory_limit_mb: int, output_limit_bytes: int) -> str:
    if run.verdict == Verdict.memory_limit:
        parts = ["Memory Limit Exceeded", f"The program needed more than {memory_limit_mb} MB."]
    elif run.verdict == Verdict.output_limit:
        parts = ["Output Limit Exceeded", f"The program printed more than {output_limit_bytes} bytes."]
    else:
        parts = ["Runtime Error"]
    if run.error is not None:
        parts += _error_lines(run.error)
    elif run.detail and run.verdict == Verdict.runtime_error:
        parts.append(run.detail[0].upper() + run.detail[1:] + ".")
    if not (run.error and run.error.phase == "load" and run.error.last_call is None):
        parts.append(_input_field(run))
    if run.verdict == Verdict.output_limit:
        parts.append(_field("Output (beginning)", run.stdout or run.stderr))
    else:
        parts += _printed_fields(run)
    return "\n".join(parts)


def _timeout_reason(run: TestRun) -> str:
    """Which of the sandbox's time limits fired: the CPU time limit or the wall-clock backstop."""
    if run.time_limit_hit == "wall":
        return (
            f"The program was still running after {wall_limit_s(run.time_limit_s):g} s of wall-clock time on this "
            f"input (the backstop, {WALL_BACKSTOP_FACTOR}x its {run.time_limit_s:g} s CPU time limit): it was "
            "waiting (sleeping, blocked on input) rather than computing."
        )
    return f"The program used more than its {run.time_limit_s:g} s of CPU time on this input."


def _describe_timeout(run: TestRun, suite_time_limit_s: float) -> str:
    if run.suite_cut:
        why = f"The whole test suite did not finish within {suite_time_limit_s:g} s; the program is too slow overall."
    else:
        why = _timeout_reason(run)
    parts = ["Time Limit Exceeded", why]
    parts.append(_input_field(run))
    parts += _printed_fields(run)
    return "\n".join(parts)


def _describe_wrong_answer(run: TestRun) -> str:
    if run.error is not None:  # assert problems: a failed assertion
        parts = [_field("Input", run.error.last_call or "(the test code)")]
        parts.append(_field("Output", run.error.last_result or "(no value returned)"))
        parts.append(_field("Expected", f"the assertion to hold: {run.error.source or 'assert ...'}"))
    else:
        parts = [_field("Input", run.input), _field("Output", run.output), _field("Expected", run.expected)]
    if run.kind != "stdin":  # a stdin program's stdout is its Output already
        parts += _printed_fields(run)
    elif run.stderr.strip():
        parts.append(_field("Stderr", run.stderr))
    return "\n".join(parts)


def _shortness(run: TestRun) -> tuple[int, int, int]:
    return (len(run.input) + len(run.expected), len(run.input), run.index)


def feedback_text(
    runs: Sequence[TestRun],
    *,
    memory_limit_mb: int = 1024,
    output_limit_bytes: int = 1 << 20,
    suite_time_limit_s: float = 60.0,
) -> str:
    """SDPO-style feedback from the runs (visible tests only ever contribute content).

    Priority: the first runtime error (memory and output limits included) on a visible test, else
    its first time limit, else up to two wrong answers, shortest first. A failure that only shows on
    hidden tests gives one sentence and no content. Empty when every run passed.
    """
    visible_failures = [r for r in runs if not r.hidden and r.verdict != Verdict.accepted]
    errors = [r for r in visible_failures if r.verdict in (Verdict.runtime_error, Verdict.memory_limit, Verdict.output_limit)]
    timeouts = [r for r in visible_failures if r.verdict == Verdict.time_limit]
    wrong = [r for r in visible_failures if r.verdict == Verdict.wrong_answer]
    if errors:
        text = _describe_runtime_error(errors[0], memory_limit_mb, output_limit_bytes)
    elif timeouts:
        text = _describe_timeout(timeouts[0], suite_time_limit_s)
    elif wrong:
        visible_total = sum(1 for r in runs if not r.hidden)
        shown = sorted(wrong, key=_shortness)[:MAX_WRONG_ANSWERS_SHOWN]
        header = f"Wrong Answer ({len(wrong)} of {visible_total} visible tests failed)"
        text = "\n\n".join([header] + [_describe_wrong_answer(r) for r in shown])
    elif any(r.hidden and r.verdict != Verdict.accepted for r in runs):
        text = HIDDEN_FAILURE_FEEDBACK
    else:
        return ""
    return clip_total(text)


FORMAT_ERROR_FEEDBACK = (
    "Format Error\nNo Python code block was found in the response. "
    "Put the complete program in one ```python code block."
)
TRUNCATED_FEEDBACK = (
    "Truncated\nThe response hit the length limit before it ended, so the program was not run. "
    "Think more briefly and give the complete program in one ```python code block."
)


# ---------------------------------------------------------------------------------------------
# The judge
# ---------------------------------------------------------------------------------------------


class _PreparedTest(BaseModel):
    index: int
    hidden: bool
    test: TestCase
    stdin: str  # what enters the sandbox: the input only, never the expected output
    expected_value: Any = None
    arguments: Any = None  # evalplus: the encoded argument list sent to the harness
    shown_input: str | None = None  # evalplus: the input as feedback shows it (the call)
    accepted_values: list[Any] = Field(default_factory=list)  # evalplus: also_accepted, decoded


class Judge:
    """Judge responses to one problem with a sandbox; `judge_many` fans out over a bounded pool.

    suite_time_limit_s: wall-clock budget for all tests of one response (None: the larger of 60 s
    and twice the problem's per-test limit). output_limit_bytes: stdout/stderr cap per test (raised
    for a test whose expected output is large).
    """

    def __init__(
        self,
        sandbox: Sandbox,
        max_workers: int = 4,
        suite_time_limit_s: float | None = None,
        output_limit_bytes: int = 4 << 20,
    ):
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self.sandbox = sandbox
        self.max_workers = max_workers
        self.suite_time_limit_s = suite_time_limit_s
        self.output_limit_bytes = output_limit_bytes
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    # -- public ----------------------------------------------------------------------------------

    def judge(self, problem: Problem, response: str, finish_reason: str | None = "stop") -> Judgement:
        """Extract the program from `response` and judge it."""
        extraction = extract_code(response, finish_reason)
        return self._judge_extraction(problem, extraction)

    def judge_program(self, problem: Problem, text: str) -> Judgement:
        """Judge a solution file: a bare program, or a whole model response (detected)."""
        return self._judge_extraction(problem, program_from_text(text))

    def judge_many(
        self,
        problem: Problem,
        responses: Sequence[str],
        finish_reasons: Sequence[str | None] | None = None,
    ) -> list[Judgement]:
        """Judge many responses concurrently (at most `max_workers` at a time); order is kept."""
        if finish_reasons is None:
            finish_reasons = ["stop"] * len(responses)
        if len(finish_reasons) != len(responses):
            raise ValueError(f"{len(responses)} responses but {len(finish_reasons)} finish reasons")
        prepared = self._prepare(problem)  # once, not per response: inputs can be megabytes of JSON
        pool = self._executor()
        futures = [
            pool.submit(self._judge_extraction, problem, extract_code(r, f), prepared)
            for r, f in zip(responses, finish_reasons)
        ]
        return [future.result() for future in futures]

    def judge_code(self, problem: Problem, code: str, prepared: list[_PreparedTest] | None = None) -> Judgement:
        """Run an already extracted program on the problem's tests."""
        started = time.monotonic()
        prepared = self._prepare(problem) if prepared is None else prepared
        suite_limit = self._suite_limit(problem)
        deadline = started + suite_limit
        runs: list[TestRun] = []
        if problem.kind == "evalplus":
            runs = self._run_calls(problem, code, prepared, deadline, suite_limit)
        for item in prepared if problem.kind != "evalplus" else []:
            failed_so_far = any(r.verdict != Verdict.accepted for r in runs)
            if item.hidden and failed_so_far:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0.01:  # the suite's budget is spent before this test could start
                runs.append(self._suite_timeout(item, problem))
                break
            limit = min(problem.time_limit_s, remaining)
            run = self._run_test(problem, code, item, limit)
            if run.verdict == Verdict.time_limit and limit < problem.time_limit_s:
                run.suite_cut = True
            runs.append(run)
            if run.verdict == Verdict.accepted:
                continue
            if run.verdict == Verdict.time_limit or item.hidden:
                break
            if run.error is not None and run.error.phase == "load" and problem.kind != "stdin":
                break
        passed = sum(1 for r in runs if r.verdict == Verdict.accepted)
        first_failure = next((r for r in runs if r.verdict != Verdict.accepted), None)
        verdict = Verdict.accepted if first_failure is None else first_failure.verdict
        feedback = ""
        if first_failure is not None:
            feedback = feedback_text(
                runs,
                memory_limit_mb=problem.memory_limit_mb,
                output_limit_bytes=self.output_limit_bytes,
                suite_time_limit_s=suite_limit,
            )
        return Judgement(
            verdict=verdict,
            tests_passed=passed,
            tests_total=len(prepared),
            feedback=feedback,
            code=code,
            wall_s=time.monotonic() - started,
            test_results=[TestResult(index=r.index, hidden=r.hidden, verdict=r.verdict, wall_s=r.wall_s) for r in runs],
        )

    @staticmethod
    def _suite_timeout(item: _PreparedTest, problem: Problem) -> TestRun:
        return TestRun(
            index=item.index,
            hidden=item.hidden,
            verdict=Verdict.time_limit,
            input=item.test.input,
            expected=item.test.output,
            detail="the suite's time limit ran out before this test",
            suite_cut=True,
            time_limit_s=0.0,
        )

    def close(self) -> None:
        """Stop the worker pool (the sandbox is the caller's to close)."""
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None

    def __enter__(self) -> Judge:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------------------

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.max_workers, thread_name_prefix="ttsd-judge")
            return self._pool

    def _judge_extraction(
        self, problem: Problem, extraction: Extraction, prepared: list[_PreparedTest] | None = None
    ) -> Judgement:
        prepared = self._prepare(problem) if prepared is None else prepared
        if extraction.verdict is not None:
            feedback = TRUNCATED_FEEDBACK if extraction.verdict == Verdict.truncated else FORMAT_ERROR_FEEDBACK
            return Judgement(
                verdict=extraction.verdict,
                tests_total=len(problem.tests) + len(problem.hidden_tests),
                feedback=feedback,
                code=extraction.code,
            )
        assert extraction.code is not None
        return self.judge_code(problem, extraction.code, prepared)

    def _suite_limit(self, problem: Problem) -> float:
        if self.suite_time_limit_s is not None:
            return self.suite_time_limit_s
        return max(60.0, 2 * problem.time_limit_s)

    @staticmethod
    def _prepare(problem: Problem) -> list[_PreparedTest]:
        """Tests in judging order with what goes into the sandbox; ValueError for a broken problem."""
        if problem.kind in ("functional", "assert") and not problem.entry_point:
            raise ValueError(f"problem {problem.id!r}: a {problem.kind} problem needs an entry_point")
        prepared = []
        tests = [(i, t, False) for i, t in enumerate(problem.tests)]
        tests += [(i, t, True) for i, t in enumerate(problem.hidden_tests)]
        for index, test, hidden in tests:
            name = f"problem {problem.id!r}, {'hidden ' if hidden else ''}test {index}"
            if problem.kind == "stdin":
                prepared.append(_PreparedTest(index=index, hidden=hidden, test=test, stdin=test.input))
                continue
            if problem.kind == "assert":
                payload = json.dumps({"test": test.input})
                prepared.append(_PreparedTest(index=index, hidden=hidden, test=test, stdin=payload))
                continue
            if problem.kind == "evalplus":
                prepared.append(_prepare_evalplus(name, problem, index, hidden, test))
                continue
            try:
                arguments = parse_arguments(test.input)
            except ValueError as exc:
                raise ValueError(f"{name}: an input line is not JSON ({exc})") from None
            try:
                expected_value = json.loads(test.output)
            except ValueError as exc:
                raise ValueError(f"{name}: the expected output is not JSON ({exc})") from None
            payload = json.dumps({"args": arguments})
            prepared.append(
                _PreparedTest(index=index, hidden=hidden, test=test, stdin=payload, expected_value=expected_value)
            )
        return prepared

    def _run_calls(
        self, problem: Problem, code: str, items: list[_PreparedTest], deadline: float, suite_limit: float
    ) -> list[TestRun]:
        """evalplus: the visible tests in one sandboxed process, then (when all passed) the hidden
        ones in another, cut after the first hidden failure. One process per test would cost a
        process start per input, and MBPP+ problems have a hundred inputs each."""
        runs: list[TestRun] = []
        for hidden in (False, True):
            group = [item for item in items if item.hidden == hidden]
            if not group:
                continue
            if any(run.verdict != Verdict.accepted for run in runs):
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0.01:
                runs.append(self._suite_timeout(group[0], problem))
                break
            group_runs = self._run_call_batch(problem, code, group, remaining)
            failure = next((i for i, run in enumerate(group_runs) if run.verdict != Verdict.accepted), None)
            if hidden and failure is not None:
                group_runs = group_runs[: failure + 1]
            runs.extend(group_runs)
        return runs

    def _run_call_batch(self, problem: Problem, code: str, items: list[_PreparedTest], time_limit_s: float) -> list[TestRun]:
        call_limit = min(problem.time_limit_s, time_limit_s)
        result, nonce = run_calls(
            self.sandbox, code, str(problem.entry_point), [item.arguments for item in items],
            call_time_limit_s=call_limit, time_limit_s=time_limit_s, memory_limit_mb=problem.memory_limit_mb,
            output_limit_bytes=max(self.output_limit_bytes, 2 * sum(len(i.test.output.encode()) for i in items) + (64 << 10)),
        )
        return classify_calls(problem, items, result, nonce, per_call_limit_s=call_limit)

    def _run_test(self, problem: Problem, code: str, item: _PreparedTest, time_limit_s: float) -> TestRun:
        nonce = secrets.token_hex(16)
        if problem.kind == "stdin":
            argv = ["python3", "-I", HARNESS_FILE, "stdin", nonce]
            stdin = item.stdin
        else:
            argv = ["python3", "-I", HARNESS_FILE, problem.kind, str(problem.entry_point)]
            stdin = nonce + "\n" + item.stdin
        output_limit = max(self.output_limit_bytes, 2 * len(item.test.output.encode()) + (64 << 10))
        job = Job(
            files={SOLUTION_FILE: code, HARNESS_FILE: HARNESS_SOURCE},
            argv=argv,
            stdin=stdin,
            time_limit_s=time_limit_s,
            memory_limit_mb=problem.memory_limit_mb,
            output_limit_bytes=output_limit,
        )
        result = self.sandbox.run(job)
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
            time_limit_hit=result.time_limit_hit,
        )


def _prepare_evalplus(name: str, problem: Problem, index: int, hidden: bool, test: TestCase) -> _PreparedTest:
    try:
        arguments = json.loads(test.input)
        expected = decode_value(json.loads(test.output))
        accepted = [decode_value(json.loads(text)) for text in test.also_accepted or []]
        shown = show_call(str(problem.entry_point), decode_value(arguments))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name}: not in the evalplus value encoding ({exc})") from None
    if not isinstance(arguments, list):
        raise ValueError(f"{name}: the input must be a JSON array of arguments")
    return _PreparedTest(
        index=index, hidden=hidden, test=test, stdin="", expected_value=expected, arguments=arguments,
        shown_input=shown, accepted_values=accepted,
    )


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
    job = Job(
        files={SOLUTION_FILE: code, HARNESS_FILE: HARNESS_SOURCE},
        argv=["python3", "-I", HARNESS_FILE, "calls", entry_point],
        stdin=nonce + "\n" + json.dumps(payload),
        time_limit_s=time_limit_s,
        memory_limit_mb=memory_limit_mb,
        output_limit_bytes=output_limit_bytes,
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
    problem: Problem, items: Sequence[_PreparedTest], result: ExecResult, nonce: str, per_call_limit_s: float
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
    if result.timed_out or result.exit_code in (-_SIGXCPU, 128 + _SIGXCPU):
        return TestRun(verdict=Verdict.time_limit, suite_cut=True, **base)
    if result.output_truncated:
        return TestRun(verdict=Verdict.output_limit, **base)
    if result.memory_exceeded:
        return TestRun(verdict=Verdict.memory_limit, **base)
    detail = _exit_detail(result.exit_code)
    if result.exit_code == 0:
        detail = "the program ended before the test finished (did it call exit()?)"
    return TestRun(verdict=Verdict.runtime_error, detail=detail, **base)


def _show_expected(problem: Problem, expected: Any) -> str:
    if problem.output_match == "not_none":
        return "a value other than None" if expected else "None"
    if problem.output_match == "set":
        return show_value(expected) + " (in any order)"
    return show_value(expected)

"""The feedback text shown to the self-teacher and the multi-turn prompt (pure, from the runs).

Only visible tests ever contribute content; a failure that only shows on hidden tests gives one
sentence. Each field is cut to FIELD_MAX_CHARS characters / FIELD_MAX_LINES lines, the whole text
to FEEDBACK_MAX_CHARS. `FeedbackOptions` leaves out single parts of the text (the failing source
line, the input, what the program printed, the expected output); docs/feedback.md says why one
would, and what the SDPO paper and LeetCode / LiveCodeBench show.
For pytest problems the content is pytest's own report of the failing test
(`--tb=short`: the failing lines, the assertion with its values, the exception), cut to the same
limits from its end, where the innermost frame and the `E` lines are.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel

from ttsd.judge.records import ErrorInfo, TestRun, Verdict
from ttsd.sandbox.supervisor import WALL_BACKSTOP_FACTOR, wall_limit_s


class FeedbackOptions(BaseModel, frozen=True):
    """Which parts the feedback text shows; each flag removes exactly the text it names (defaults:
    everything, as LeetCode shows it). SolveConfig's `feedback_*` fields set them (docs/feedback.md)."""

    source_line: bool = True  # "Line 3 in f: total += x"; False: "Line 3 in f" (number and function only)
    input: bool = True  # the "Last Executed Input" / "Input" field
    printed_output: bool = True  # the "Printed Output" and "Stderr" fields (what the program printed besides its answer)
    expected_output: bool = True  # the "Expected" field of a wrong answer


ALL_FEEDBACK = FeedbackOptions()

FIELD_MAX_CHARS = 250
FIELD_MAX_LINES = 8
FEEDBACK_MAX_CHARS = 2000
CUT_MARK = " …[cut]"
MAX_WRONG_ANSWERS_SHOWN = 2
HIDDEN_FAILURE_FEEDBACK = "All visible tests passed, but a hidden test failed."
FORMAT_ERROR_FEEDBACK = (
    "Format Error\nNo Python code block was found in the response. "
    "Put the complete program in one ```python code block."
)
TRUNCATED_FEEDBACK = (
    "Truncated\nThe response hit the length limit before it ended, so the program was not run. "
    "Think more briefly and give the complete program in one ```python code block."
)


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


def clip_field_end(text: str, max_chars: int = FIELD_MAX_CHARS, max_lines: int = FIELD_MAX_LINES) -> str:
    """`clip_field` keeping the end of `text` (a cut mark first if cut)."""
    lines = text.rstrip("\n").split("\n")
    cut = len(lines) > max_lines
    lines = lines[-max_lines:]
    while len(lines) > 1 and len("\n".join(lines)) > max_chars:  # whole lines first
        lines, cut = lines[1:], True
    kept = "\n".join(lines)
    if len(kept) > max_chars:
        kept, cut = kept[-max_chars:], True
    return CUT_MARK.strip() + "\n" + kept if cut else kept


def _field(name: str, text: str) -> str:
    return f"{name}:\n{clip_field(text) if text.strip() else '(nothing)'}"


def _error_lines(error: ErrorInfo, options: FeedbackOptions = ALL_FEEDBACK) -> list[str]:
    lines = [clip_field(f"{error.type}: {error.message}" if error.message else error.type)]
    if error.line is not None:
        where = "" if error.where != "test" else " of the test code"
        function = error.function if error.function and error.function != "<module>" else None
        place = f"Line {error.line}{where}" + (f" in {function}" if function else "")
        quote = error.source and options.source_line
        lines.append(clip_field(place + (f": {error.source}" if quote else "")))
    return lines


def _printed_fields(run: TestRun, options: FeedbackOptions = ALL_FEEDBACK) -> list[str]:
    """What the program printed, for debugging: its stdout and stderr when not empty."""
    fields = []
    if not options.printed_output:
        return fields
    if run.stdout.strip():
        fields.append(_field("Printed Output", run.stdout))
    if run.stderr.strip():
        fields.append(_field("Stderr", run.stderr))
    return fields


def _input_field(run: TestRun, options: FeedbackOptions = ALL_FEEDBACK) -> list[str]:
    if not options.input:
        return []
    if run.error and run.error.last_call:
        return [_field("Last Executed Input", run.error.last_call)]
    return [_field("Last Executed Input", run.input)]


def _describe_runtime_error(run: TestRun, memory_limit_mb: int, output_limit_bytes: int, options: FeedbackOptions) -> str:
    if run.verdict == Verdict.memory_limit:
        parts = ["Memory Limit Exceeded", f"The program needed more than {memory_limit_mb} MB."]
    elif run.verdict == Verdict.output_limit:
        parts = ["Output Limit Exceeded", f"The program printed more than {output_limit_bytes} bytes."]
    else:
        parts = ["Runtime Error"]
    if run.error is not None:
        parts += _error_lines(run.error, options)
    elif run.detail and run.verdict == Verdict.runtime_error:
        parts.append(run.detail[0].upper() + run.detail[1:] + ".")
    if not (run.error and run.error.phase == "load" and run.error.last_call is None):
        parts += _input_field(run, options)
    if run.verdict == Verdict.output_limit:
        if options.printed_output:
            parts.append(_field("Output (beginning)", run.stdout or run.stderr))
    else:
        parts += _printed_fields(run, options)
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


def _describe_timeout(run: TestRun, suite_time_limit_s: float, options: FeedbackOptions) -> str:
    if run.suite_cut:
        why = f"The whole test suite did not finish within {suite_time_limit_s:g} s; the program is too slow overall."
    else:
        why = _timeout_reason(run)
    parts = ["Time Limit Exceeded", why]
    parts += _input_field(run, options)
    parts += _printed_fields(run, options)
    return "\n".join(parts)


def _describe_wrong_answer(run: TestRun, options: FeedbackOptions) -> str:
    if run.error is not None:  # assert problems: a failed assertion
        shown_input = _field("Input", run.error.last_call or "(the test code)")
        output = _field("Output", run.error.last_result or "(no value returned)")
        expected = _field("Expected", f"the assertion to hold: {run.error.source or 'assert ...'}")
    else:
        shown_input, output, expected = _field("Input", run.input), _field("Output", run.output), _field("Expected", run.expected)
    parts = ([shown_input] if options.input else []) + [output] + ([expected] if options.expected_output else [])
    if run.kind != "stdin":  # a stdin program's stdout is its Output already
        parts += _printed_fields(run, options)
    elif run.stderr.strip() and options.printed_output:
        parts.append(_field("Stderr", run.stderr))
    return "\n".join(parts)


def _describe_pytest(run: TestRun, memory_limit_mb: int, output_limit_bytes: int) -> str:
    """One failing pytest test: which, and pytest's report of it (or the limit it hit)."""
    if run.error is not None and run.error.phase == "load":
        parts = ["The tests could not import the program"]
    else:
        parts = [f"Test: {run.input}"]
    if run.verdict == Verdict.time_limit:
        parts.append(f"The test did not finish within {run.time_limit_s:g} s.")
    elif run.verdict == Verdict.memory_limit:
        parts.append(f"The program needed more than {memory_limit_mb} MB.")
    elif run.verdict == Verdict.output_limit:
        parts.append(f"The program printed more than {output_limit_bytes} bytes.")
    elif run.detail:
        parts.append(run.detail[0].upper() + run.detail[1:] + ".")
    if run.error is not None and run.error.traceback.strip():
        parts.append(f"pytest report:\n{clip_field_end(run.error.traceback)}")
    elif run.error is not None and run.error.type:
        parts.append(clip_field(f"{run.error.type}: {run.error.message}" if run.error.message else run.error.type))
    if run.verdict == Verdict.output_limit:
        parts.append(_field("Output (beginning)", run.stdout or run.stderr))
    else:
        parts += _printed_fields(run)
    return "\n".join(parts)


_PYTEST_HEADERS = {
    Verdict.wrong_answer: "Test Failed",
    Verdict.runtime_error: "Runtime Error",
    Verdict.time_limit: "Time Limit Exceeded",
    Verdict.memory_limit: "Memory Limit Exceeded",
    Verdict.output_limit: "Output Limit Exceeded",
}


def _pytest_feedback(runs: Sequence[TestRun], memory_limit_mb: int, output_limit_bytes: int) -> str:
    """The first failing visible tests in pytest's order (at most MAX_WRONG_ANSWERS_SHOWN)."""
    visible = [r for r in runs if not r.hidden]
    failures = [r for r in visible if r.verdict != Verdict.accepted]
    if not failures:
        return HIDDEN_FAILURE_FEEDBACK if any(r.verdict != Verdict.accepted for r in runs) else ""
    header = _PYTEST_HEADERS.get(failures[0].verdict, "Failed")
    if not (failures[0].error is not None and failures[0].error.phase == "load"):  # else no test ran
        header += f" ({len(failures)} of {len(visible)} visible tests failed)"
    shown = [_describe_pytest(r, memory_limit_mb, output_limit_bytes) for r in failures[:MAX_WRONG_ANSWERS_SHOWN]]
    return clip_total("\n\n".join([header, *shown]))


def _shortness(run: TestRun) -> tuple[int, int, int]:
    return (len(run.input) + len(run.expected), len(run.input), run.index)


def feedback_text(
    runs: Sequence[TestRun],
    *,
    memory_limit_mb: int = 1024,
    output_limit_bytes: int = 1 << 20,
    suite_time_limit_s: float = 60.0,
    options: FeedbackOptions = ALL_FEEDBACK,
) -> str:
    """SDPO-style feedback from the runs (visible tests only ever contribute content).

    Priority: the first runtime error (memory and output limits included) on a visible test, else
    its first time limit, else up to two wrong answers, shortest first. A failure that only shows on
    hidden tests gives one sentence and no content. Empty when every run passed. `options` leaves
    parts out (FeedbackOptions). pytest
    problems: the first failing visible tests, in order, with pytest's reports.
    """
    if runs and runs[0].kind == "pytest":
        return _pytest_feedback(runs, memory_limit_mb, output_limit_bytes)
    visible_failures = [r for r in runs if not r.hidden and r.verdict != Verdict.accepted]
    errors = [r for r in visible_failures if r.verdict in (Verdict.runtime_error, Verdict.memory_limit, Verdict.output_limit)]
    timeouts = [r for r in visible_failures if r.verdict == Verdict.time_limit]
    wrong = [r for r in visible_failures if r.verdict == Verdict.wrong_answer]
    if errors:
        text = _describe_runtime_error(errors[0], memory_limit_mb, output_limit_bytes, options)
    elif timeouts:
        text = _describe_timeout(timeouts[0], suite_time_limit_s, options)
    elif wrong:
        visible_total = sum(1 for r in runs if not r.hidden)
        shown = sorted(wrong, key=_shortness)[:MAX_WRONG_ANSWERS_SHOWN]
        header = f"Wrong Answer ({len(wrong)} of {visible_total} visible tests failed)"
        text = "\n\n".join([header] + [_describe_wrong_answer(r, options) for r in shown])
    elif any(r.hidden and r.verdict != Verdict.accepted for r in runs):
        text = HIDDEN_FAILURE_FEEDBACK
    else:
        return ""
    return clip_total(text)

"""Feedback: the text shown to the self-teacher and the multi-turn prompt (ttsd/judge/feedback.py)."""

from __future__ import annotations

import re

import pytest

from ttsd.judge import (
    CUT_MARK,
    FEEDBACK_MAX_CHARS,
    HIDDEN_FAILURE_FEEDBACK,
    ErrorInfo,
    TestRun,
    Verdict,
    clip_field,
    clip_total,
    feedback_text,
)


def test_clip_field_cuts_at_250_characters_or_8_lines():
    assert clip_field("short") == "short"
    cut = clip_field("x" * 1000)
    assert cut == "x" * 250 + CUT_MARK
    lines = clip_field("\n".join(str(i) for i in range(20)))
    assert lines == "\n".join(str(i) for i in range(8)) + CUT_MARK
    assert clip_field("\n".join(["y" * 40] * 8)).endswith(CUT_MARK)  # 8 lines but 327 characters


def test_clip_total_keeps_at_most_2000_characters():
    assert clip_total("a" * 5000) == "a" * (FEEDBACK_MAX_CHARS - len(CUT_MARK)) + CUT_MARK
    assert len(clip_total("a" * 5000)) == FEEDBACK_MAX_CHARS
    assert clip_total("ok") == "ok"


def _wrong(index, input_text, output, expected, hidden=False):
    return TestRun(index=index, hidden=hidden, verdict=Verdict.wrong_answer, input=input_text, output=output, expected=expected)


def test_feedback_shows_two_wrong_answers_shortest_first():
    runs = [
        _wrong(0, "10 20 30 40\n", "99\n", "100\n"),
        TestRun(index=1, hidden=False, verdict=Verdict.accepted, input="1\n", expected="1\n"),
        _wrong(2, "1\n", "0\n", "2\n"),
        _wrong(3, "5 5\n", "9\n", "10\n"),
    ]
    text = feedback_text(runs)
    assert text.startswith("Wrong Answer (3 of 4 visible tests failed)")
    first, second = text.index("Input:\n1\n"), text.index("Input:\n5 5\n")
    assert first < second
    assert "10 20 30 40" not in text  # only two shown: the longest is left out
    assert "Output:\n0\nExpected:\n2" in text


def test_feedback_each_field_and_the_whole_are_cut():
    huge = "\n".join("9" * 300 for _ in range(50))
    runs = [_wrong(0, huge, huge, huge), _wrong(1, huge + "1", huge, huge)]
    text = feedback_text(runs)
    assert len(text) <= FEEDBACK_MAX_CHARS
    for field in re.findall(r"(?:Input|Output|Expected):\n(.*?)(?=\n[A-Z][a-z]+:\n|\n\n|$)", text, re.DOTALL):
        assert len(field) <= 250 + len(CUT_MARK) and field.count("\n") < 8
    many = [_wrong(i, "x" * 240, "y" * 240, "z" * 240) for i in range(2)]
    assert feedback_text(many).count(CUT_MARK) == 0  # 240 characters fit a field uncut


def test_feedback_prefers_a_runtime_error_then_a_timeout():
    error = ErrorInfo(type="IndexError", message="list index out of range", line=7, function="solve", source="return a[i]")
    runs = [
        _wrong(0, "1\n", "2\n", "3\n"),
        TestRun(index=1, hidden=False, verdict=Verdict.time_limit, input="big\n", time_limit_s=6),
        TestRun(index=2, hidden=False, verdict=Verdict.runtime_error, input="4 5\n", error=error, stdout="partial\n"),
    ]
    text = feedback_text(runs)
    assert text.splitlines()[:3] == ["Runtime Error", "IndexError: list index out of range", "Line 7 in solve: return a[i]"]
    assert "Last Executed Input:\n4 5" in text and "Printed Output:\npartial" in text
    timeout_text = feedback_text(runs[:2])
    assert timeout_text.startswith("Time Limit Exceeded\nThe program used more than its 6 s of CPU time")
    assert "big" in timeout_text


def test_feedback_on_hidden_failure_says_only_that():
    secret_input, secret_output = "31337 424242\n", "SECRET-EXPECTED\n"
    runs = [
        TestRun(index=0, hidden=False, verdict=Verdict.accepted, input="1 2\n", expected="3\n"),
        _wrong(0, secret_input, "nope\n", secret_output, hidden=True),
    ]
    assert feedback_text(runs) == HIDDEN_FAILURE_FEEDBACK
    assert feedback_text(runs[:1]) == ""  # everything passed: no feedback


# ----- FeedbackOptions: each option removes exactly the text it names -----------------------------
def _runtime_error():
    error = ErrorInfo(type="NameError", message="name 'y' is not defined", line=3, function="f", source="total += y", where="solution")
    return TestRun(index=0, hidden=False, verdict=Verdict.runtime_error, input="[1, 2]", kind="functional",
                   stdout="debug 1\n", stderr="warn\n", error=error)


def _wrong_answer():
    return TestRun(index=0, hidden=False, verdict=Verdict.wrong_answer, input="[1, 2]", kind="functional",
                   output="4", expected="3", stdout="debug 1\n")


def test_feedback_options_default_to_everything():
    from ttsd.judge import FeedbackOptions

    assert feedback_text([_runtime_error()], options=FeedbackOptions()) == feedback_text([_runtime_error()]) == (
        "Runtime Error\nNameError: name 'y' is not defined\nLine 3 in f: total += y\n"
        "Last Executed Input:\n[1, 2]\nPrinted Output:\ndebug 1\nStderr:\nwarn"
    )


@pytest.mark.parametrize("option, run, removed, replaced_by", [
    ("source_line", _runtime_error, "Line 3 in f: total += y", "Line 3 in f"),
    ("input", _runtime_error, "\nLast Executed Input:\n[1, 2]", ""),
    ("printed_output", _runtime_error, "\nPrinted Output:\ndebug 1\nStderr:\nwarn", ""),
    ("input", _wrong_answer, "Input:\n[1, 2]\n", ""),
    ("expected_output", _wrong_answer, "\nExpected:\n3", ""),
    ("printed_output", _wrong_answer, "\nPrinted Output:\ndebug 1", ""),
])
def test_each_feedback_option_changes_exactly_its_text(option, run, removed, replaced_by):
    from ttsd.judge import FeedbackOptions

    full = feedback_text([run()])
    assert full.count(removed) == 1
    assert feedback_text([run()], options=FeedbackOptions(**{option: False})) == full.replace(removed, replaced_by)


def test_the_judge_renders_feedback_with_its_options(examples_dir):
    from ttsd.judge import FeedbackOptions, Judge
    from ttsd.problems import load_problem
    from ttsd.sandbox import make_sandbox

    problem = load_problem(examples_dir / "sum-two-numbers.json")
    crash = "```python\na, b = map(int, input().split())\ntotal = a + undefined_name\nprint(total)\n```"
    with Judge(make_sandbox("local"), max_workers=1) as quoting, Judge(make_sandbox("local"), max_workers=1, feedback=FeedbackOptions(source_line=False)) as plain:
        quoted, unquoted = quoting.judge(problem, crash).feedback, plain.judge(problem, crash).feedback
    assert "total = a + undefined_name" in quoted
    assert "undefined_name" in unquoted  # the error message still names it; only the source line is gone
    assert "total = a + undefined_name" not in unquoted and unquoted == quoted.replace(": total = a + undefined_name", "")

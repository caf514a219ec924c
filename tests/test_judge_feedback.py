"""Feedback: the text shown to the self-teacher and the multi-turn prompt (ttsd/judge/feedback.py)."""

from __future__ import annotations

import re

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

"""The copy diagnostic (ttsd.sdpo.copying) on hand-built token sequences: quoted spans found, gaps
split and pooled by hand, no false match on common tokens, the alarm's threshold."""

from __future__ import annotations

import pytest

from ttsd.runs import CopyGap
from ttsd.sdpo import copying

FEEDBACK = "Runtime Error\nNameError: name 'y' is not defined\nLine 3 in f: total += y\nLast Executed Input:\nf([1, 2])"
# an attempt as token pieces (what diagnostics.token_texts gives): its line 3 is the quoted one
TOKENS = ["def", " f", "(xs", "):\n", "   ", " total", " =", " 0", "\n", "   ", " for", " x", " in", " xs", ":\n",
          "       ", " total", " +=", " y", "\n", "   ", " return", " total", "\n"]


def quoted_text(tokens, flags):
    return [t for t, q in zip(tokens, flags) if q]


def test_the_quoted_source_line_is_found_and_nothing_else():
    flags = copying.quoted_tokens(TOKENS, FEEDBACK)
    assert quoted_text(TOKENS, flags) == [" total", " +=", " y"]  # the indentation before it is whitespace: never quoted


def test_common_tokens_do_not_match():
    # the feedback quotes a line with `return`, a colon, brackets and indentation in it; the attempt
    # has those too, but no common run of 10 normalised characters
    feedback = "Line 5 in g: return a[i] // b\n    (x):"
    tokens = ["    ", "return", " b", "[j]", " + ", "a", ":", "\n", "    ", "(", "x", ")", "\n"]
    assert not any(copying.quoted_tokens(tokens, feedback))  # longest common run: " return " (8)
    # sharing "return a[" plus the space before it (10) is a quote of that line's beginning
    assert quoted_text(["    ", "return", " a", "[j]"], copying.quoted_tokens(["    ", "return", " a", "[j]"], feedback)) == ["return", " a"]
    assert not any(copying.quoted_tokens(TOKENS, ""))  # no feedback in the context: nothing quoted


def test_whitespace_is_normalised_but_a_line_break_is_not_a_space():
    assert copying.normalise("a \t b\n    c") == ("a b\nc", [0, 1, 4, 5, 10])
    # the same ten characters split over two lines in the attempt do not match one line of the feedback
    assert not any(copying.quoted_tokens(["total +=", "\n", "y + 1"], "total += y + 1"))
    # indentation differences do not matter inside a line
    assert all(copying.quoted_tokens(["total", "   +=", "  y + 1"], "total += y + 1"))


def test_a_token_half_inside_a_quote_is_not_quoted():
    # "+= y;" : its "+= y" part is in the feedback but its ";" is not
    flags = copying.quoted_tokens(["count", " total", " += y;", " z"], "total += y + 1")
    assert flags == [False, True, False, False]


def test_the_minimum_span_is_ten_characters():
    assert copying.MIN_QUOTE_CHARS == 10
    assert all(copying.quoted_tokens(["abcdefghij"], "xx abcdefghij yy"))
    assert not any(copying.quoted_tokens(["abcdefghi"], "xx abcdefghi yy"))
    assert all(copying.quoted_tokens(["abcdefghi"], "abcdefghi", min_chars=9))


def test_gaps_split_and_pooled_by_hand():
    part = copying.split_gaps([1.0, 2.0, -1.0, 0.0], [True, True, False, False])
    assert part == CopyGap(quoted_tokens=2, quoted_gap=1.5, other_tokens=2, other_gap=-0.5)
    assert part.excess == pytest.approx(2.0)
    none_quoted = copying.split_gaps([0.5, -0.5, 1.5], [False, False, False])
    assert none_quoted == CopyGap(quoted_tokens=0, quoted_gap=None, other_tokens=3, other_gap=0.5) and none_quoted.excess is None
    # token means: quoted (1 + 2) / 2 (the second part has none); other (−1 + 0 + 0.5 − 0.5 + 1.5) / 5
    pooled = copying.pool([part, None, none_quoted])
    assert pooled.quoted_tokens == 2 and pooled.quoted_gap == pytest.approx(1.5)
    assert pooled.other_tokens == 5 and pooled.other_gap == pytest.approx(0.1)
    assert copying.pool([None]) is None
    with pytest.raises(ValueError):
        copying.split_gaps([1.0], [True, False])


def test_the_alarm_needs_enough_quoted_tokens_and_an_excess_over_half_a_nat():
    def gap(n, quoted, other):
        return CopyGap(quoted_tokens=n, quoted_gap=quoted, other_tokens=100, other_gap=other)

    assert copying.copy_alarm(gap(49, 2.0, 0.0)) is None  # too few quoted tokens
    assert copying.copy_alarm(gap(50, 0.5, 0.0)) is None  # excess not above 0.5
    message = copying.copy_alarm(gap(50, 0.51, 0.0))
    assert message is not None and "--no-feedback-source-line" in message
    assert copying.copy_alarm(None) is None and copying.copy_alarm(gap(80, None, 0.0)) is None

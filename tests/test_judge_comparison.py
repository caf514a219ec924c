"""Comparison: LiveCodeBench's and EvalPlus's value semantics, and the harness's value encoding
round trip (ttsd/judge/comparison.py)."""

from __future__ import annotations

import json

import pytest

from ttsd.judge import decode_value, evalplus_match, harness, lines_match, values_match



@pytest.mark.parametrize(
    "output, expected, same",
    [
        ("3\n", "3", True),
        ("  3  \n\n\n", "3\n", True),  # outer whitespace and trailing blank lines are stripped
        ("1 2\n3\n", "1 2\r\n3", True),  # each line is stripped (\r included)
        ("1.0\n", "1", True),  # exact Decimal fallback
        ("0.10 0.20", "0.1 0.2", True),
        ("1e2", "100", True),
        ("1  2", "1 2", True),  # numbers: fields are whitespace-split
        ("a  b", "a b", False),  # text: no fallback (LCB)
        ("0.1000001", "0.1", False),  # exact, not approximate
        ("3\n4", "3", False),  # line counts differ
        ("YES", "yes", False),
        ("", "0", False),
        ("nan", "nan", True),  # equal as text before any Decimal comparison
    ],
)
def test_lines_match(output, expected, same):
    assert lines_match(output, expected) is same


def test_values_match_lcb_semantics():
    assert values_match((1, 2), [1, 2])  # a top-level tuple becomes a list
    assert not values_match([(1, 2)], [[1, 2]])  # nested tuples are not converted (LCB)
    assert values_match(1, 1.0) and values_match(True, 1)  # Python ==
    assert not values_match(frozenset({1, 2}), [1, 2])
    assert not values_match("1", 1)
    assert values_match({"a": [1]}, {"a": [1]})


def test_returned_values_round_trip_through_the_harness_encoding():
    class AlwaysEqual:
        def __eq__(self, other):
            return True

    class SneakyInt(int):
        def __eq__(self, other):
            return True

        __hash__ = int.__hash__

    def round_trip(value):
        return decode_value(json.loads(json.dumps(harness.encode_value(value))))

    assert round_trip((1, "a")) == (1, "a") and isinstance(round_trip((1, "a")), tuple)
    assert round_trip({1: [2, (3,)]}) == {1: [2, (3,)]}  # int keys survive (JSON would make them str)
    assert round_trip({3, 4}) == {3, 4}
    assert round_trip(2**200) == 2**200 and round_trip(0.1) == 0.1
    assert round_trip(SneakyInt(5)) == 5 and round_trip(SneakyInt(5)) != 6  # the plain value only
    assert round_trip(AlwaysEqual()) != 5 and round_trip(AlwaysEqual()) != round_trip(AlwaysEqual())
    with pytest.raises(TypeError):
        harness._plain([1, AlwaysEqual()])


def test_evalplus_match_follows_evalplus():
    assert evalplus_match((4, 5), (4, 5)) and not evalplus_match([4, 5], (4, 5))  # no tuple-to-list
    # floats: 1e-6 (with rtol 1e-7) when atol is 0 and the expected value is a float or floats only
    assert evalplus_match(0.1 + 0.2, 0.3) and evalplus_match([1.0000005], [1.0]) and not evalplus_match(1.00001, 1.0)
    assert not evalplus_match((1, 2, 3.000000001), (1, 2, 3))  # ints expected: exact only
    assert not evalplus_match(1, 1.0000001)  # inexact needs the same type
    assert evalplus_match(3.1416, 3.14159, atol=1e-4) and not evalplus_match(3.15, 3.14159, atol=1e-4)
    assert not evalplus_match([1.0, 2.0], [1.0], atol=1.0)  # lengths must agree
    assert evalplus_match(float("inf"), float("inf")) and not evalplus_match(float("nan"), float("nan"))
    assert evalplus_match((5, 4), (4, 5), output_match="set") and not evalplus_match((5,), (4, 5), output_match="set")
    assert evalplus_match("<re.Match>", True, output_match="not_none") and evalplus_match(None, False, output_match="not_none")
    assert not evalplus_match(None, True, output_match="not_none") and not evalplus_match(False, True, output_match="not_none")
    assert evalplus_match("anything", 1, output_match="any")
    assert evalplus_match(0, 7, also_accepted=[0]) and not evalplus_match(1, 7, also_accepted=[0])
    assert not evalplus_match(object(), [1], output_match="set")  # a comparison that raises is a mismatch

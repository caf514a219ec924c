"""Comparing what a program produced with what was expected (pure; LiveCodeBench and EvalPlus semantics).

* stdin: output and expected output are stripped, split into lines, each line stripped; equal when
  the line counts match and every line pair is equal as text or, failing that, as the lists of
  exact `Decimal`s of their whitespace-split fields (`lines_match`).
* functional: a top-level tuple result becomes a list; the result must `==` the JSON-parsed
  expected output (`values_match`). Nested tuples are not converted (as in LCB).
* evalplus: ==, the problem's output_match and also_accepted, float tolerance atol / 1e-6
  (`evalplus_match`).

Returned values travel out of the sandbox in the harness's encoding (`decode_value` undoes it) and
are shown to the model by `show_value` / `show_call`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from ttsd.judge.harness import decode_value as harness_decode_value

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

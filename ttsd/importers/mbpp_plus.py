"""MBPP+ (EvalPlus's release, `MbppPlus.jsonl`) into `evalplus` problems.

Base inputs become visible tests, plus inputs hidden tests; the expected outputs come from running
each canonical solution once in the sandbox (through the judge's `calls` mode), compared as
EvalPlus does (the task's atol for floats, its special oracles, kept here as data). A bad line is
reported and skipped; the others are imported.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ttsd.importers.common import ImportReport, jsonl_lines
from ttsd.judge import Judge, call_reports, decode_value, run_calls
from ttsd.judge.harness import encode_value
from ttsd.problems.loading import save_problem, validation_faults
from ttsd.problems.model import Problem, TestCase
from ttsd.sandbox.base import Sandbox

MBPP_PLUS_TIME_LIMIT_S = 4.0  # per call: EvalPlus's smallest per-input time limit
# The canonical solution computes the expected outputs once, at import, with generous limits.
REFERENCE_CALL_LIMIT_S = 30.0
REFERENCE_RUN_LIMIT_S = 600.0
REFERENCE_OUTPUT_LIMIT_BYTES = 16 << 20  # a task whose expected outputs are larger is skipped

# EvalPlus's MBPP+ oracles that are not plain equality, keyed by entry point as EvalPlus keys them
# (evalplus/eval/_special_oracle.py): outputs compared as sets (the order is free), outputs that are
# only checked for being non-None (the canonical solutions return re.Match objects), and a task whose
# answer EvalPlus accepts whatever it is (Mbpp/164, ill-posed).
MBPP_SET_OUTPUT = {"similar_elements", "find_char_long", "common_in_nested_lists", "extract_singly", "larg_nnum", "intersection_array", "find_dissimilar", "Diff"}
MBPP_NOT_NONE_OUTPUT = {"check_str", "text_match_three", "text_starta_endb"}
MBPP_ANY_OUTPUT = {"are_equivalent"}


def _surface_area_oracle(base_edge: float, height: float) -> int:
    """Mbpp/581's second accepted answer: the height read as the pyramid's perpendicular height."""
    slant = ((base_edge / 2) ** 2 + height**2) ** 0.5
    return round(base_edge**2 + 2 * base_edge * slant)


def _digit_distance_oracle(first: int, second: int) -> int:
    """Mbpp/558's second accepted answer: the shorter number padded with leading zeros."""
    a, b = str(first), str(second)
    width = max(len(a), len(b))
    return sum(abs(int(x) - int(y)) for x, y in zip(a.zfill(width), b.zfill(width)))


# Other answers EvalPlus also accepts, from a test's arguments (Mbpp/295: 0 as well).
MBPP_ALSO_ACCEPTED: dict[str, Callable[..., object]] = {
    "sum_div": lambda *args: 0,
    "surface_Area": _surface_area_oracle,
    "digit_distance_nums": _digit_distance_oracle,
}


def _deep_tuple(value: object) -> object:
    return tuple(_deep_tuple(item) for item in value) if isinstance(value, list) else value


# The release stores arguments as JSON, which has no tuples, sets or complex numbers; EvalPlus
# restores them per task before calling (evalplus/data/mbpp.py, `mbpp_deserialize_inputs`). Each
# entry turns one argument list as stored into the arguments the function is called with.
MBPP_ARGUMENT_SHAPES: dict[int, Callable[[list], list]] = {}
for _numbers, _shape in [
    ((2, 116, 132, 143, 222, 261, 273, 394, 399, 421, 424, 429, 470, 560, 579, 596, 616, 630, 726, 740, 744, 809),
     lambda args: [tuple(arg) for arg in args]),
    ((63, 64, 70, 94, 120, 237, 272, 299, 400, 409, 417, 438, 473, 614, 780),
     lambda args: [[tuple(item) for item in arg] for arg in args]),
    ((75, 413, 444, 753), lambda args: [[tuple(item) for item in args[0]], args[1]]),
    ((106, 750), lambda args: [args[0], tuple(args[1])]),
    ((115,), lambda args: [[set(item) if isinstance(item, list) and item else {} for item in args[0]]]),
    ((124,), lambda args: [float(args[0]), complex(args[1])]),
    ((250, 405, 446, 617, 720, 763, 808), lambda args: [tuple(args[0]), args[1]]),
    ((259, 401, 445), lambda args: [tuple(tuple(item) for item in arg) for arg in args]),
    ((278,), lambda args: [tuple(tuple(item) if isinstance(item, list) else item for item in args[0])]),
    ((307,), lambda args: [tuple(args[0]), args[1], args[2]]),
    ((722,), lambda args: [{key: tuple(value) for key, value in args[0].items()}, *args[1:]]),
    ((252,), lambda args: [complex(args[0])]),
    ((580, 615, 791), lambda args: [_deep_tuple(arg) for arg in args]),
]:
    for _number in _numbers:
        MBPP_ARGUMENT_SHAPES[_number] = _shape


class MbppPlusRecord(BaseModel):
    """One line of the MBPP+ release (`MbppPlus.jsonl`; fields we use, others ignored)."""

    model_config = ConfigDict(extra="ignore")

    task_id: str = Field(pattern=r"^Mbpp/\d+$")
    prompt: str
    entry_point: str
    canonical_solution: str
    base_input: list[list]
    plus_input: list[list]
    atol: float = Field(default=0.0, ge=0)
    assertion: str = ""

    @property
    def number(self) -> int:
        return int(self.task_id.split("/")[1])

    @property
    def reference_code(self) -> str:
        """The program EvalPlus computes the expected outputs with: prompt + canonical solution."""
        return self.prompt + self.canonical_solution


class MbppPlusRow(BaseModel):
    """A parsed line, or why it is unusable."""

    where: str
    record: MbppPlusRecord | None = None
    fault: str | None = None


class SkippedRecord(BaseModel):
    where: str
    reason: str


class MbppPlusImportReport(ImportReport):
    skipped: list[SkippedRecord] = Field(default_factory=list)


def mbpp_plus_statement(record: MbppPlusRecord) -> str:
    """The task text (the prompt's docstring) and, as the MBPP+ prompts show it, the first test of
    the original MBPP, which names the function and shows its arguments."""
    description = record.prompt.strip().strip("'\"").strip()
    example: list[str] = []
    for line in record.assertion.strip().split("\n"):
        example.append(line)
        if line.startswith("assert"):
            break
    text = f"{description}\n\nWrite it as a Python function named `{record.entry_point}`."
    if any(line.startswith("assert") for line in example):
        text += " Your code should pass this test:\n\n" + "\n".join(example).strip()
    return text


def mbpp_plus_arguments(record: MbppPlusRecord) -> tuple[list, list]:
    """(base, plus) argument lists in the judge's value encoding, restored as EvalPlus restores them."""
    shape = MBPP_ARGUMENT_SHAPES.get(record.number, lambda args: args)
    return (
        [encode_value(list(shape(args))) for args in record.base_input],
        [encode_value(list(shape(args))) for args in record.plus_input],
    )


def iter_mbpp_plus_rows(path: Path | str) -> Iterator[MbppPlusRow]:
    """Every non-blank line of an MBPP+ JSONL file, parsed (`FILE:LINE` names each)."""
    for where, line in jsonl_lines(path):
        try:
            yield MbppPlusRow(where=where, record=MbppPlusRecord.model_validate_json(line))
        except ValidationError as error:
            field, message = validation_faults(error)[0]
            yield MbppPlusRow(where=where, fault=f"{field}: {message}" if field else message)


def mbpp_plus_problem(record: MbppPlusRecord, sandbox: Sandbox) -> Problem:
    """One MBPP+ task → an `evalplus` problem: base inputs visible, plus inputs hidden, expected
    outputs from running the canonical solution once in `sandbox`. ValueError says why a task
    cannot be imported (its arguments cannot be restored, its canonical solution fails...)."""
    if not record.entry_point.isidentifier():
        raise ValueError(f"entry_point: {record.entry_point!r} is not a Python identifier")
    try:
        base, plus = mbpp_plus_arguments(record)
    except (TypeError, ValueError, IndexError, AttributeError) as error:
        raise ValueError(f"base_input/plus_input: the arguments cannot be restored ({error})") from None
    calls = base + plus
    result, nonce = run_calls(
        sandbox, record.reference_code, record.entry_point, calls, call_time_limit_s=REFERENCE_CALL_LIMIT_S,
        time_limit_s=REFERENCE_RUN_LIMIT_S, output_limit_bytes=REFERENCE_OUTPUT_LIMIT_BYTES,
    )
    reports, _ = call_reports(result.stdout, nonce)
    if len(reports) < len(calls):
        if result.output_truncated:
            why = f"its outputs exceed {REFERENCE_OUTPUT_LIMIT_BYTES >> 20} MB"
        elif result.timed_out:
            why = f"the run took over {REFERENCE_RUN_LIMIT_S:g} s"
        elif result.memory_exceeded:
            why = "out of memory"
        else:
            why = f"exit code {result.exit_code}: {result.stderr.strip()[-300:]}"
        last = reports[-1] if reports else {}
        if last.get("status") == "timeout":
            why = f"a call took over {REFERENCE_CALL_LIMIT_S:g} s"
        elif last.get("status") == "error":
            why = f"{last.get('type')}: {last.get('message')}"
        failed_at = len(reports) - 1 if last.get("status") in ("timeout", "error") else len(reports)
        raise ValueError(f"canonical_solution: did not return on {_input_name(failed_at, len(base))} ({why})")
    expected: list[str] = []
    for index, report in enumerate(reports):
        if report.get("status") != "returned":
            raise ValueError(
                f"canonical_solution: raised {report.get('type')}: {report.get('message')} on {_input_name(index, len(base))}"
            )
        value = report["value"]
        if record.entry_point in MBPP_NOT_NONE_OUTPUT:
            value = decode_value(value) is not None
        elif "$opaque" in json.dumps(value):
            raise ValueError(f"canonical_solution: returns an object that cannot be compared on {_input_name(index, len(base))}")
        expected.append(json.dumps(value))
    tests = [_mbpp_test(record, arguments, output) for arguments, output in zip(calls, expected)]
    output_match = (
        "set" if record.entry_point in MBPP_SET_OUTPUT
        else "not_none" if record.entry_point in MBPP_NOT_NONE_OUTPUT
        else "any" if record.entry_point in MBPP_ANY_OUTPUT
        else None
    )
    return Problem(
        id=f"mbpp-{record.number}",
        title=f"{record.task_id}: {record.entry_point}",
        statement=mbpp_plus_statement(record),
        kind="evalplus",
        entry_point=record.entry_point,
        tests=tests[: len(base)],
        hidden_tests=tests[len(base) :],
        time_limit_s=MBPP_PLUS_TIME_LIMIT_S,
        source="mbpp_plus",
        atol=record.atol or None,
        output_match=output_match,
    )


def _input_name(index: int, base_count: int) -> str:
    return f"base_input[{index}]" if index < base_count else f"plus_input[{index - base_count}]"


def _mbpp_test(record: MbppPlusRecord, arguments: list, output: str) -> TestCase:
    also = MBPP_ALSO_ACCEPTED.get(record.entry_point)
    accepted = None
    if also is not None:
        try:
            accepted = [json.dumps(encode_value(also(*decode_value(arguments))))]
        except (TypeError, ValueError, ArithmeticError):
            accepted = None  # the second oracle does not apply to these arguments: equality only
    return TestCase(input=json.dumps(arguments), output=output, also_accepted=accepted)


def import_mbpp_plus(
    path: Path | str,
    out_dir: Path | str,
    sandbox: Sandbox,
    *,
    workers: int = 2,
    verify: bool = True,
    on_progress: Callable[[MbppPlusRow, str | None], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> MbppPlusImportReport:
    """Write one `<id>.json` per usable MBPP+ task; a bad line is skipped with its reason (in the
    report), the rest are imported. verify: judge every canonical solution against the problem made
    from it, and skip a task whose own solution is not accepted (nondeterministic output...).
    on_start(lines) once the file is read; on_progress(row, fault) after each line, fault None
    when it was imported."""
    rows = list(iter_mbpp_plus_rows(path))
    report = MbppPlusImportReport(records=len(rows))
    if on_start:
        on_start(len(rows))
    seen: dict[str, str] = {}

    def convert(row: MbppPlusRow) -> Problem:
        if row.record is None:
            raise ValueError(row.fault)
        problem = mbpp_plus_problem(row.record, sandbox)
        if verify:
            judgement = judge.judge_program(problem, row.record.reference_code)
            if not judgement.passed:
                raise ValueError(f"canonical_solution: not accepted by the judge ({judgement.verdict.value}): {judgement.feedback[:300]}")
        return problem

    with Judge(sandbox, max_workers=1) as judge, ThreadPoolExecutor(max_workers=workers) as pool:
        for row, future in zip(rows, [pool.submit(convert, row) for row in rows]):
            try:
                problem = future.result()
                if problem.id in seen:
                    raise ValueError(f"task_id: {problem.id!r} is also the id of {seen[problem.id]}")
            except ValueError as error:
                report.skipped.append(SkippedRecord(where=row.where, reason=str(error)))
                if on_progress:
                    on_progress(row, str(error))
                continue
            seen[problem.id] = row.where
            report.written.append(save_problem(problem, out_dir))
            report.visible_tests += len(problem.tests)
            report.hidden_tests += len(problem.hidden_tests)
            if on_progress:
                on_progress(row, None)
    return report

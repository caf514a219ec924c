"""LiveCodeBench `code_generation_lite` JSONL into `stdin` / `functional` problems.

Public tests become visible tests, `private_test_cases` hidden tests (a seeded random fraction of
them can be moved to the visible ones); `metadata.func_name` makes a functional problem.
LiveCodeBench lines are untrusted data: `private_test_cases` is base64(zlib(pickle(JSON string)))
in the official release, and it is unpickled with an Unpickler that can build nothing but
builtin str/list/dict, so a crafted line cannot run code.
"""

from __future__ import annotations

import base64
import binascii
import builtins
import io
import json
import pickle
import random
import zlib
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, TypeAdapter, ValidationError

from ttsd.importers.common import ImportReport, check_unique_ids, jsonl_lines, safe_id
from ttsd.problems.loading import ProblemFileError, save_problem, validation_faults
from ttsd.problems.model import MAX_NESTING, nesting_depth
from ttsd.problems.model import Problem, TestCase

# Decompressed private tests larger than this are refused (a zlib bomb would otherwise eat memory).
MAX_PRIVATE_TESTS_BYTES = 1 << 30


class LcbDecodeError(ValueError):
    """`private_test_cases` (or `public_test_cases`) cannot be decoded safely."""


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
    if nesting_depth(blob) > MAX_NESTING:
        raise LcbDecodeError(f"nested more than {MAX_NESTING} levels deep")
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
            if nesting_depth(payload) > MAX_NESTING:
                raise LcbDecodeError(f"the unpickled string is nested more than {MAX_NESTING} levels deep")
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


def lcb_record_to_problem(record: LcbRecord, visible_fraction: float = 0.0, seed: int = 0) -> Problem:
    """One LiveCodeBench record → Problem. The random split depends only on (seed, question_id),
    so a problem gets the same split whatever else is in the file or the date window."""
    if nesting_depth(record.metadata) > MAX_NESTING:
        raise LcbDecodeError(f"metadata: nested more than {MAX_NESTING} levels deep")
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
    for where, line in jsonl_lines(path):
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
    check_unique_ids(problems, Path(path))
    for problem in problems:
        report.written.append(save_problem(problem, out_dir))
        report.visible_tests += len(problem.tests)
        report.hidden_tests += len(problem.hidden_tests)
    return report

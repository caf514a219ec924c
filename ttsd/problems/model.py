"""The pydantic model of one problem (the `problem.json` format, documented in docs/problem-format.md)."""

from __future__ import annotations

import ast
import json
import re
import sys
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

ProblemKind = Literal["stdin", "functional", "assert", "evalplus", "pytest"]
# How an `evalplus` problem compares a returned value with the expected one (EvalPlus's oracles):
# equal (==, or within atol for floats), set (as sets: the order is free), not_none (the expected
# bool says whether the result must be non-None), any (any value the function returns passes).
OutputMatch = Literal["equal", "set", "not_none", "any"]


# Limits every problem is held to: what the sandboxes can enforce, and what ttsd's parsers can read.
MAX_TIME_LIMIT_S = 3600.0  # CPU seconds per test (the sandboxes' wall-clock backstop is 10x this)
MAX_MEMORY_LIMIT_MB = 1 << 20  # 1 TiB: the address-space rlimit (bytes) and Docker's memory limit stay representable
MAX_ID_LENGTH = 200  # the id names the file <id>.json: file systems allow 255 bytes per name
MAX_NESTING = 200  # brackets ([ and {) open at once in a problem file or a JSON test value


def nesting_depth(text: str, limit: int = MAX_NESTING) -> int:
    """How deeply JSON `text` nests arrays and objects, counted up to `limit` + 1 (a deeper text
    stops the count there). Brackets inside strings do not count. Linear time, no recursion:
    Python's json parser and pydantic recurse, so a text nested thousands deep is refused before
    either sees it."""
    depth = deepest = 0
    for token in _JSON_STRUCTURE.finditer(text):
        char = token.group()
        if char in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    break
        elif char in "]}":
            depth -= 1
    return deepest


_JSON_STRUCTURE = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def _unicode_text(text: str) -> str:
    """Refuse a lone surrogate (JSON's "\ud800" escape parses to one): it is not Unicode text, and
    writing it (a prompt, a program's stdin, a problem file) would fail later, far from its cause."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(
            f"contains a lone surrogate {text[error.start]!r} at character {error.start}: not valid Unicode text"
        ) from None
    return text


Text = Annotated[str, AfterValidator(_unicode_text)]


def surrogate_issues(data: object) -> list[tuple[str, str]]:
    """(field path, message) for every string (key or value) in `data` that holds a lone surrogate.
    Checked before any field is validated: pydantic's own validators (patterns, literals, dates)
    fail on one with a UnicodeEncodeError instead of a validation error."""
    issues: list[tuple[str, str]] = []
    stack: list[tuple[str, object]] = [("", data)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, str):
            try:
                _unicode_text(value)
            except ValueError as error:
                issues.append((where, str(error)))
        elif isinstance(value, dict):
            for key, item in value.items():
                name = key if isinstance(key, str) else str(key)
                if surrogate_issues(name):
                    issues.append((where, f"a field name {name!r} contains a lone surrogate: not valid Unicode text"))
                    continue
                stack.append((f"{where}.{name}" if where else name, item))
        elif isinstance(value, (list, tuple)):
            stack.extend((f"{where}[{index}]", item) for index, item in enumerate(value))
    return sorted(issues)


def _json_value_issue(text: str) -> str | None:
    """Why `text` is not one JSON value ttsd can parse, or None."""
    if nesting_depth(text) > MAX_NESTING:
        return f"nested more than {MAX_NESTING} levels deep"
    try:
        json.loads(text)
    except ValueError as error:
        return f"not one JSON value ({error})"
    return None


class TestCase(BaseModel):
    """One test.

    stdin: `input` is fed to the program's stdin, `output` is the expected stdout.
    functional: `input` holds one JSON value per line (one per argument), `output` the JSON result.
    assert: `input` is Python test code defining `check(candidate)` (HumanEval style); the judge runs
    it after the program, in the same namespace, and calls `check(<entry_point>)`; a failing `assert`
    fails the test. `output` is unused ("").
    evalplus: `input` is one JSON array, the arguments, and `output` the expected return value, both
    in the judge's value encoding (tuples, sets, dicts and complex numbers tagged, see
    `ttsd.judge.harness.encode_value`); `also_accepted` lists other return values that pass.
    """

    model_config = ConfigDict(extra="forbid")
    __test__ = False  # not a pytest class

    input: Text
    output: Text = ""
    also_accepted: list[Text] | None = None


class ProblemIssue(BaseModel):
    """One thing wrong with a problem beyond its field types: `field` is a path like `tests[2].input`."""

    field: str
    message: str


class Problem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=MAX_ID_LENGTH, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="also the file name: <id>.json")
    title: Text = ""
    statement: Text = Field(min_length=1)
    starter_code: Text = ""
    kind: ProblemKind = "stdin"
    entry_point: str | None = None
    tests: list[TestCase] = Field(default_factory=list, description="visible: failures may be shown to the model")
    hidden_tests: list[TestCase] = Field(default_factory=list, description="judged, never shown")
    time_limit_s: float = Field(default=6.0, gt=0, le=MAX_TIME_LIMIT_S, description="CPU seconds per test")
    memory_limit_mb: int = Field(default=1024, gt=0, le=MAX_MEMORY_LIMIT_MB)
    difficulty: Text | None = None
    source: Text | None = None
    contest_date: datetime | None = Field(default=None, description="when the problem was first published (LCB)")
    # None (left out of the file) for every other kind
    atol: float | None = Field(default=None, ge=0, description="evalplus: absolute tolerance for float results (unset or 0: 1e-6 when the expected value is a float or a list of floats, as EvalPlus)")
    output_match: OutputMatch | None = Field(default=None, description="evalplus: how a returned value is compared with the expected one (unset: equal)")
    test_file: str | None = Field(default=None, description="pytest: the visible pytest file (its failures are shown)")
    hidden_test_file: str | None = Field(default=None, description="pytest: a second pytest file, judged, never shown")
    module: str | None = Field(default=None, description="pytest: the module name the program is saved as and imported by the test files (unset: solution)")

    @property
    def module_name(self) -> str:
        """pytest: the name the tests import the candidate program by."""
        return self.module or DEFAULT_MODULE

    @property
    def all_tests(self) -> list[TestCase]:
        """Visible tests first, then hidden ones: the order the judge runs them in."""
        return [*self.tests, *self.hidden_tests]

    def semantic_issues(self) -> list[ProblemIssue]:
        """What makes a well-typed problem unjudgeable: checked on every construction."""
        issues: list[ProblemIssue] = []
        if self.kind in ("functional", "assert", "evalplus"):
            if not self.entry_point:
                issues.append(ProblemIssue(field="entry_point", message=f"required when kind is '{self.kind}'"))
            elif not self.entry_point.isidentifier():
                issues.append(ProblemIssue(field="entry_point", message=f"'{self.entry_point}' is not a Python identifier"))
        if self.kind == "pytest":
            return issues + _pytest_issues(self)
        if self.test_file is not None or self.hidden_test_file is not None or self.module is not None:
            issues.append(ProblemIssue(field="kind", message="test_file, hidden_test_file and module apply only to kind 'pytest'"))
        if not self.tests and not self.hidden_tests:
            issues.append(ProblemIssue(field="tests", message="a problem needs at least one test (in tests or hidden_tests)"))
        if self.kind == "functional":
            for group in ("tests", "hidden_tests"):
                for index, test in enumerate(getattr(self, group)):
                    issues.extend(_functional_test_issues(f"{group}[{index}]", test))
        if self.kind == "assert":
            for group in ("tests", "hidden_tests"):
                for index, test in enumerate(getattr(self, group)):
                    issues.extend(_assert_test_issues(f"{group}[{index}]", test))
        if self.kind == "evalplus":
            for group in ("tests", "hidden_tests"):
                for index, test in enumerate(getattr(self, group)):
                    issues.extend(_evalplus_test_issues(f"{group}[{index}]", test))
        elif self.atol is not None or self.output_match is not None or any(t.also_accepted is not None for t in self.all_tests):
            issues.append(ProblemIssue(field="kind", message="atol, output_match and also_accepted apply only to kind 'evalplus'"))
        return issues

    @model_validator(mode="before")
    @classmethod
    def _unicode_everywhere(cls, data: object) -> object:
        issues = surrogate_issues(data) if isinstance(data, dict) else []
        if issues:
            raise ValueError("\n".join(f"{field}: {message}" for field, message in issues))
        return data

    @model_validator(mode="after")
    def _judgeable(self) -> Problem:
        issues = self.semantic_issues()
        if issues:
            # One line per issue, "field: message", so loaders can point at each field.
            raise ValueError("\n".join(f"{issue.field}: {issue.message}" for issue in issues))
        return self


DEFAULT_MODULE = "solution"
# Names a pytest problem's module cannot take: the files beside it in the sandbox, pytest and what
# it imports, and the standard library (the work directory comes first on sys.path, so a module
# named `json` would shadow the real one for pytest itself).
_RESERVED_MODULES = {"test_visible", "test_hidden", "conftest", "_ttsd_harness", "pytest", "_pytest", "pluggy",
                     "iniconfig", "packaging", "py", "exceptiongroup", "tomli"}


def _pytest_issues(problem: Problem) -> list[ProblemIssue]:
    """A pytest problem: a visible test file that parses (and maybe a hidden one), a module name
    that can be imported, and no tests of the other kinds. Whether the files collect (their imports
    resolve) needs the sandbox: `ttsd.judge.pytest_suite.collect`, run where problems are loaded
    for solve and check."""
    issues = []
    if problem.tests or problem.hidden_tests:
        issues.append(ProblemIssue(field="tests", message="a pytest problem has no tests or hidden_tests: its tests are test_file and hidden_test_file"))
    if problem.entry_point is not None or problem.atol is not None or problem.output_match is not None:
        issues.append(ProblemIssue(field="kind", message="entry_point, atol and output_match do not apply to kind 'pytest'"))
    if problem.test_file is None:
        issues.append(ProblemIssue(field="test_file", message="required when kind is 'pytest' (the visible pytest file)"))
    for field in ("test_file", "hidden_test_file"):
        source = getattr(problem, field)
        if source is None:
            continue
        try:
            tree = ast.parse(source)
        except SyntaxError as error:
            issues.append(ProblemIssue(field=field, message=f"not valid Python (line {error.lineno}: {error.msg})"))
            continue
        if not any(isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name.lower().startswith("test")
                   for node in tree.body):
            issues.append(ProblemIssue(field=field, message="defines no test function (a top-level def test_...)"))
    name = problem.module_name
    if not name.isidentifier():
        issues.append(ProblemIssue(field="module", message=f"'{name}' is not a Python identifier"))
    elif name in _RESERVED_MODULES or name in sys.stdlib_module_names:
        issues.append(ProblemIssue(field="module", message=f"'{name}' is taken (a standard library module, pytest's, or a file of the judge)"))
    return issues


def _functional_test_issues(where: str, test: TestCase) -> list[ProblemIssue]:
    """A functional test's input is one JSON value per line and its output one JSON value."""
    issues = []
    for line_number, line in enumerate(test.input.split("\n"), start=1):
        if (issue := _json_value_issue(line)) is not None:
            issues.append(ProblemIssue(field=f"{where}.input", message=f"line {line_number} is {issue}"))
            break
    if (issue := _json_value_issue(test.output)) is not None:
        issues.append(ProblemIssue(field=f"{where}.output", message=issue))
    return issues


def _assert_test_issues(where: str, test: TestCase) -> list[ProblemIssue]:
    """An assert test's input is Python code that defines `check(candidate)`."""
    try:
        tree = ast.parse(test.input)
    except SyntaxError as error:
        return [ProblemIssue(field=f"{where}.input", message=f"not valid Python (line {error.lineno}: {error.msg})")]
    except (RecursionError, MemoryError):  # the parser's own limits: nested too deeply to compile
        return [ProblemIssue(field=f"{where}.input", message="not valid Python (nested too deeply to parse)")]
    except ValueError as error:  # a null byte
        return [ProblemIssue(field=f"{where}.input", message=f"not valid Python ({error})")]
    defines_check = any(isinstance(node, ast.FunctionDef) and node.name == "check" for node in tree.body)
    if not defines_check:
        return [ProblemIssue(field=f"{where}.input", message="the test code must define check(candidate)")]
    return []


def _evalplus_test_issues(where: str, test: TestCase) -> list[ProblemIssue]:
    """An evalplus test's input is one JSON array (the arguments); its outputs are JSON values."""
    issues = []
    if (issue := _json_value_issue(test.input)) is not None:
        issues.append(ProblemIssue(field=f"{where}.input", message=issue))
    elif not isinstance(json.loads(test.input), list):
        issues.append(ProblemIssue(field=f"{where}.input", message="must be a JSON array of the arguments"))
    for name, text in [("output", test.output), *((f"also_accepted[{i}]", t) for i, t in enumerate(test.also_accepted or []))]:
        if (issue := _json_value_issue(text)) is not None:
            issues.append(ProblemIssue(field=f"{where}.{name}", message=issue))
    return issues

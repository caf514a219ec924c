"""Problems: the bundled examples, loading with clear errors, and `ttsd problems` (list, show, validate).
The importers have their own tests (tests/test_importers_*.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import REPO
from ttsd.cli import app
from ttsd.problems import (
    EXAMPLES_DIR,
    Problem,
    ProblemFileError,
    TestCase,
    find_problem,
    load_problem,
    load_problems,
    parse_problem,
    save_problem,
)

runner = CliRunner()


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


def good_problem(**overrides) -> dict:
    data = {"id": "p1", "statement": "Print 1.", "tests": [{"input": "", "output": "1\n"}]}
    data.update(overrides)
    return data


# ---------------------------------------------------------------- bundled examples


def test_examples_load_with_unique_ids_and_cover_kinds_and_difficulties(examples_dir):
    problems = load_problems(examples_dir)
    assert examples_dir == EXAMPLES_DIR
    assert len(problems) >= 6
    by_id = {p.id: p for p in problems}
    assert len(by_id) == len(problems)
    assert {p.kind for p in problems} >= {"stdin", "functional", "pytest"}
    assert {p.difficulty for p in problems} >= {"easy", "hard"}
    summing = by_id["sum-two-numbers"]
    assert (summing.kind, summing.difficulty, summing.source) == ("stdin", "easy", "ttsd")
    for problem in problems:
        assert problem.source == "ttsd"
        assert (examples_dir / "solutions" / f"{problem.id}.py").is_file(), f"{problem.id} has no reference solution"
        if problem.kind == "pytest":  # a problem folder named after its id; judged in tests/test_problem_folders.py
            assert (examples_dir / problem.id / "problem.toml").is_file()
            assert problem.test_file and problem.hidden_test_file
            continue
        assert (examples_dir / f"{problem.id}.json").is_file(), "file name is <id>.json"
        assert len(problem.tests) >= 2 and len(problem.hidden_tests) > len(problem.tests), problem.id
        if problem.kind == "functional":
            assert f"def {problem.entry_point}(self" in problem.starter_code
            assert problem.starter_code.startswith("class Solution:")
    assert list((examples_dir / "solutions").glob("*.wrong.py")), "at least one plausible wrong solution"


def _run_reference(problem: Problem, solution: Path, test: TestCase) -> bool:
    """Plain (unsandboxed) check of our own trusted reference code, LiveCodeBench-style comparison."""
    if problem.kind == "functional":
        namespace: dict = {}
        exec(compile(solution.read_text(), str(solution), "exec"), namespace)
        args = [json.loads(line) for line in test.input.split("\n")]
        return getattr(namespace["Solution"](), problem.entry_point)(*args) == json.loads(test.output)
    done = subprocess.run([sys.executable, str(solution)], input=test.input, capture_output=True, text=True, timeout=60)
    return done.returncode == 0 and done.stdout.strip().split("\n") == test.output.strip().split("\n")


def test_reference_solutions_pass_every_test_and_wrong_ones_fail_a_visible_test(examples_dir):
    for problem in load_problems(examples_dir):
        if problem.kind == "pytest":
            continue  # its files run only in the sandbox: tests/test_problem_folders.py
        solution = examples_dir / "solutions" / f"{problem.id}.py"
        for index, test in enumerate(problem.all_tests):
            assert _run_reference(problem, solution, test), f"{problem.id}: test {index}"
        wrong = examples_dir / "solutions" / f"{problem.id}.wrong.py"
        if wrong.exists():
            assert not all(_run_reference(problem, wrong, test) for test in problem.tests), f"{wrong} passes"


# ---------------------------------------------------------------- loading and errors


def error_of(path: Path) -> str:
    with pytest.raises(ProblemFileError) as caught:
        load_problem(path)
    return str(caught.value)


def test_load_good_file_and_defaults(tmp_path):
    problem = load_problem(write_json(tmp_path / "p1.json", good_problem()))
    assert problem.id == "p1" and problem.kind == "stdin"
    assert problem.time_limit_s == 6.0 and problem.memory_limit_mb == 1024
    assert problem.all_tests == problem.tests


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            good_problem(tests=[{"input": "1", "output": "1"}, {"input": "2"}, {"output": "3"}]),
            "tests[2].input: field required",
        ),
        (good_problem(tests=[{"input": "1", "output": 4}]), "tests[0].output: input should be a valid string (got 4)"),
        (good_problem(hidden_tests=[{"input": "1", "outptu": "1"}]), "hidden_tests[0].outptu: unknown field"),
        (good_problem(kind="interactive"), "kind: input should be 'stdin', 'functional', 'assert', 'evalplus' or 'pytest'"),
        (good_problem(kind="pytest", tests=[]), "test_file: required when kind is 'pytest'"),
        (good_problem(kind="pytest"), "tests: a pytest problem has no tests or hidden_tests"),
        (good_problem(kind="pytest", tests=[], test_file="def test_x(:\n"), "test_file: not valid Python (line 1"),
        (good_problem(kind="pytest", tests=[], test_file="x = 1\n"), "test_file: defines no test function"),
        (good_problem(kind="pytest", tests=[], test_file="def test_x(): pass", hidden_test_file="def test_y(:"), "hidden_test_file: not valid Python"),
        (good_problem(kind="pytest", tests=[], test_file="def test_x(): pass", module="json"), "module: 'json' is taken"),
        (good_problem(kind="pytest", tests=[], test_file="def test_x(): pass", module="my-mod"), "module: 'my-mod' is not a Python identifier"),
        (good_problem(kind="pytest", tests=[], test_file="def test_x(): pass", entry_point="f"), "kind: entry_point, atol and output_match do not apply"),
        (good_problem(test_file="def test_x(): pass"), "kind: test_file, hidden_test_file and module apply only to kind 'pytest'"),
        (good_problem(time_limit_s=0), "time_limit_s: input should be greater than 0"),
        (good_problem(statement=""), "statement: string should have at least 1 character"),
        (good_problem(id="bad id/../x"), "id: must start with a letter or digit"),
        ({"statement": "s", "tests": []}, "id: field required"),
        (good_problem(tests=[]), "tests: a problem needs at least one test"),
        (good_problem(kind="functional"), "entry_point: required when kind is 'functional'"),
        (good_problem(kind="assert", tests=[{"input": "def check(c): pass"}]), "entry_point: required when kind is 'assert'"),
        (good_problem(kind="functional", entry_point="not valid"), "entry_point: 'not valid' is not a Python identifier"),
        (
            good_problem(kind="functional", entry_point="f", tests=[{"input": "[1, 2]\n{oops", "output": "3"}]),
            "tests[0].input: line 2 is not one JSON value",
        ),
        (
            good_problem(kind="functional", entry_point="f", hidden_tests=[{"input": "1", "output": "three"}]),
            "hidden_tests[0].output: not one JSON value",
        ),
        (
            good_problem(kind="assert", entry_point="f", tests=[{"input": "assert f(1) == 2"}]),
            "tests[0].input: the test code must define check(candidate)",
        ),
        (
            good_problem(kind="assert", entry_point="f", tests=[{"input": "def check(:"}]),
            "tests[0].input: not valid Python",
        ),
    ],
)
def test_bad_fields_name_file_field_and_fault(tmp_path, data, expected):
    path = write_json(tmp_path / "x.json", data)
    message = error_of(path)
    assert message.startswith(f"{path}: "), message
    assert expected in message


def test_error_lists_every_bad_field(tmp_path):
    path = write_json(tmp_path / "x.json", good_problem(kind="nope", time_limit_s=-1))
    with pytest.raises(ProblemFileError) as caught:
        load_problem(path)
    assert [field for field, _ in caught.value.faults] == ["kind", "time_limit_s"]
    assert caught.value.path == path
    assert len(str(caught.value).splitlines()) == 2


def test_invalid_json_names_line_and_column(tmp_path):
    path = write_json(tmp_path / "x.json", '{"id": "x",\n  "statement": "s"\n  "tests": []}')
    assert error_of(path) == f"{path}: invalid JSON at line 3 column 3: Expecting ',' delimiter"


def test_non_object_missing_directory_and_binary_files(tmp_path):
    assert "expected a JSON object at the top level, got list" in error_of(write_json(tmp_path / "a.json", "[1]"))
    assert error_of(tmp_path / "missing.json") == f"{tmp_path / 'missing.json'}: no such file"
    assert "is a directory" in error_of(tmp_path)
    binary = tmp_path / "b.json"
    binary.write_bytes(b'{"id": "\xff\xfe"}')
    assert "not UTF-8" in error_of(binary)


# Bad input that once gave a traceback, an unbounded read, or an unrunnable limit (#24).


def _nested(depth: int, leaf: str = "1") -> str:
    return "[" * depth + leaf + "]" * depth


@pytest.mark.parametrize("text", [
    "[" * 100000,
    _nested(5000),
    json.dumps(good_problem())[:-1] + ', "title": ' + _nested(5000) + "}",
    '{"id": "p1", "statement": "s", "tests": [{"input": "", "output": "1"}], "difficulty": ' + "{\"a\": " * 5000 + "1" + "}" * 5000 + "}",
])
def test_deep_nesting_is_refused_with_the_file_named(tmp_path, text):
    message = error_of(write_json(tmp_path / "deep.json", text))
    assert "deep.json" in message and "nested more than 200 levels deep" in message


@pytest.mark.parametrize("kind, test, field", [
    ("functional", {"input": _nested(5000), "output": "1"}, "tests[0].input"),
    ("functional", {"input": "1", "output": _nested(5000)}, "tests[0].output"),
    ("evalplus", {"input": "[" + _nested(5000) + "]", "output": "1"}, "tests[0].input"),
    ("assert", {"input": "def check(c):\n    assert " + "-" * 100000 + "1\n"}, "tests[0].input"),
])
def test_deeply_nested_test_values_are_refused_naming_the_field(tmp_path, kind, test, field):
    path = tmp_path / "deep.json"
    path.write_text(json.dumps(good_problem(kind=kind, entry_point="f", tests=[test])))
    message = error_of(path)
    assert f"deep.json: {field}:" in message and ("nested" in message or "not valid Python" in message), message


def test_only_regular_files_of_bounded_size_are_read(tmp_path, monkeypatch):
    import ttsd.problems.loading as loading

    (tmp_path / "zero.json").symlink_to("/dev/zero")
    assert "not a regular file" in error_of(tmp_path / "zero.json")
    os.mkfifo(tmp_path / "fifo.json")
    assert "not a regular file" in error_of(tmp_path / "fifo.json")  # opened without a writer: must not hang
    big = write_json(tmp_path / "big.json", good_problem(statement="x" * 5000))
    monkeypatch.setattr(loading, "MAX_FILE_BYTES", 4096)
    message = error_of(big)
    assert "big.json" in message and "larger than the" in message


@pytest.mark.parametrize("field, value", [
    ("time_limit_s", "Infinity"), ("time_limit_s", "1e300"), ("time_limit_s", str(30 * 86400)), ("time_limit_s", "NaN"),
    ("memory_limit_mb", "1e30"), ("memory_limit_mb", str(2**63)), ("memory_limit_mb", str(2**21)),
])
def test_limits_the_sandboxes_cannot_enforce_are_refused_naming_the_field(tmp_path, field, value):
    text = json.dumps(good_problem())[:-1] + f', "{field}": {value}}}'
    message = error_of(write_json(tmp_path / "limits.json", text))
    assert f"limits.json: {field}:" in message, message


def test_the_largest_limits_allowed_still_run(tmp_path):
    from ttsd.problems.model import MAX_MEMORY_LIMIT_MB, MAX_TIME_LIMIT_S
    from ttsd.sandbox.supervisor import rlimits

    problem = load_problem(write_json(tmp_path / "p1.json", good_problem(time_limit_s=MAX_TIME_LIMIT_S, memory_limit_mb=MAX_MEMORY_LIMIT_MB)))
    limits = rlimits(problem.time_limit_s, problem.memory_limit_mb, 64, 256)
    assert all(0 < value < 2**63 for pair in limits.values() for value in pair if value)


@pytest.mark.parametrize("where", ["input", "output"])
def test_a_lone_surrogate_in_a_test_is_refused_naming_file_and_field(tmp_path, where):
    test = {"input": "1\n", "output": "1\n", where: "x\ud800y"}
    path = tmp_path / "surrogate.json"
    path.write_text(json.dumps(good_problem(tests=[{}]))
                    .replace('[{}]', "[" + json.dumps(test).replace("\\\\ud800", "\\ud800") + "]"))
    assert "\\ud800" in path.read_text()
    message = error_of(path)
    assert f"surrogate.json: tests[0].{where}: " in message and "lone surrogate" in message, message


def test_an_id_too_long_for_a_file_name_is_refused(tmp_path):
    message = error_of(write_json(tmp_path / "long.json", good_problem(id="a" * 300)))
    assert "long.json: id:" in message


def test_parse_problem_names_the_given_path():
    with pytest.raises(ProblemFileError, match=r"^problems/x\.json: tests\[0\]\.input: field required$"):
        parse_problem(json.dumps(good_problem(tests=[{"output": "1"}])), "problems/x.json")


def test_load_problems_rejects_duplicate_ids_and_reports_every_bad_file(tmp_path):
    write_json(tmp_path / "a.json", good_problem(id="same"))
    write_json(tmp_path / "b.json", good_problem(id="same"))
    with pytest.raises(ProblemFileError, match="b.json: id: 'same' is also the id of .*a.json"):
        load_problems(tmp_path)
    write_json(tmp_path / "c.json", "{")
    with pytest.raises(ProblemFileError) as caught:
        load_problems(tmp_path)
    lines = str(caught.value).splitlines()
    assert len(lines) == 2 and "b.json: id:" in lines[0] and "c.json: invalid JSON" in lines[1]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ProblemFileError, match="no \\*.json problem files"):
        load_problems(empty)


def test_find_problem_by_file_by_id_recursively_and_not_found(tmp_path):
    nested = tmp_path / "set" / "deeper"
    nested.mkdir(parents=True)
    write_json(nested / "deep-one.json", good_problem(id="deep-one"))
    assert find_problem("deep-one", [tmp_path]).id == "deep-one"
    assert find_problem(nested / "deep-one.json", []).id == "deep-one"
    # a file not named after its id is still found by the id inside it
    write_json(tmp_path / "renamed.json", good_problem(id="other-name"))
    assert find_problem("other-name", [tmp_path]).id == "other-name"
    assert find_problem("sum-two-numbers").id == "sum-two-numbers"  # the bundled examples by default
    with pytest.raises(ProblemFileError, match="nothing-here: no problem file with this id in"):
        find_problem("nothing-here", [tmp_path])
    with pytest.raises(ProblemFileError, match="no such file"):
        find_problem(str(tmp_path / "gone.json"), [tmp_path])


def test_save_problem_round_trips(tmp_path):
    original = load_problem(EXAMPLES_DIR / "digit-sum-multiples.json")
    path = save_problem(original, tmp_path / "out")
    assert path == tmp_path / "out" / "digit-sum-multiples.json"
    assert load_problem(path) == original


# ---------------------------------------------------------------- CLI


def test_cli_validate_list_and_show(tmp_path):
    result = runner.invoke(app, ["problems", "validate", str(EXAMPLES_DIR)])
    assert result.exit_code == 0, result.output
    assert result.stdout.count("ok ") == len(list(EXAMPLES_DIR.glob("*.json"))) + len(list(EXAMPLES_DIR.glob("*/problem.toml")))
    assert "(count-vowels, pytest, visible test file + hidden test file)" in result.stdout

    result = runner.invoke(app, ["problems", "list", str(EXAMPLES_DIR)])
    assert result.exit_code == 0
    assert "sum-two-numbers" in result.stdout and "free-tickets" in result.stdout and "3/10" in result.stdout

    result = runner.invoke(app, ["problems", "show", "digit-sum-multiples"])
    assert result.exit_code == 0
    problem = load_problem(EXAMPLES_DIR / "digit-sum-multiples.json")
    assert "Given three integers low, high and k" in result.stdout
    assert "def countDigitSumMultiples" in result.stdout
    assert f"{len(problem.tests)} visible tests, {len(problem.hidden_tests)} hidden tests (not shown)" in result.stdout
    assert "123456789012345678" not in result.stdout, "a hidden test's input was shown"


def test_cli_bad_input_exits_2_with_one_clear_message(tmp_path):
    bad = write_json(tmp_path / "bad.json", good_problem(tests=[{"input": "1", "output": 4}]))
    good = write_json(tmp_path / "good.json", good_problem(id="good"))
    result = runner.invoke(app, ["problems", "validate", str(good), str(bad)])
    assert result.exit_code == 2
    assert f"ok  {good}" in result.stdout
    assert f"{bad}: tests[0].output: input should be a valid string" in result.stderr
    assert "Traceback" not in result.output

    result = runner.invoke(app, ["problems", "show", str(bad)])
    assert result.exit_code == 2 and result.stdout == ""
    assert f"error: {bad}: tests[0].output" in result.stderr

    result = runner.invoke(app, ["problems", "show", "no-such-problem"])
    assert result.exit_code == 2 and "no-such-problem: no problem file with this id" in result.stderr

    result = runner.invoke(app, ["problems", "list", str(tmp_path)])
    assert result.exit_code == 2 and "good" in result.stdout and "bad.json: tests[0].output" in result.stderr

    result = runner.invoke(app, ["problems", "list", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "no such directory" in result.stderr


def test_cli_subprocess_bad_files_exit_2_without_traceback(tmp_path):
    bad = write_json(tmp_path / "bad.json", '{"id": "x", "statement": "s",\n "tests": [}')
    for command in (["validate", str(bad)], ["show", str(bad)], ["show", str(tmp_path / "missing.json")]):
        done = subprocess.run(
            [sys.executable, "-m", "ttsd", "problems", *command], capture_output=True, text=True, cwd=REPO, timeout=60
        )
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr
        assert str(tmp_path) in done.stderr
    assert "missing.json: no such file" in done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "ttsd", "problems", "validate", str(bad)], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert f"{bad}: invalid JSON at line 2 column 12: Expecting value" in done.stderr


# ---------------------------------------------------------------- a leaf


def test_problems_import_neither_the_judge_nor_the_sandbox():
    """`ttsd.problems` is the format and its loading, a leaf: the judge and the importers sit above it."""
    code = (
        "import importlib, pkgutil, sys, ttsd.problems\n"
        "for module in pkgutil.walk_packages(ttsd.problems.__path__, 'ttsd.problems.'):\n"
        "    importlib.import_module(module.name)\n"
        "print(sorted(m for m in sys.modules if m.startswith(('ttsd.judge', 'ttsd.sandbox', 'ttsd.importers'))))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60, check=True)
    assert done.stdout.strip() == "[]", done.stdout

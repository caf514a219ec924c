"""Problems: the bundled examples, loading with clear errors, the importers and `ttsd problems`."""

from __future__ import annotations

import base64
import json
import os
import pickle
import subprocess
import sys
import zlib
from datetime import date
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import REPO, SHARED
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
from ttsd.problems.importers import (
    LcbDecodeError,
    decode_lcb_tests,
    encode_lcb_private_tests,
    import_humaneval,
    import_lcb,
    iter_humaneval_problems,
    safe_unpickle,
    split_visible,
)

LCB_V6 = SHARED / "data" / "lcb" / "code_generation_lite_v6_public.jsonl"
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
    assert {p.kind for p in problems} >= {"stdin", "functional"}
    assert {p.difficulty for p in problems} >= {"easy", "hard"}
    summing = by_id["sum-two-numbers"]
    assert (summing.kind, summing.difficulty, summing.source) == ("stdin", "easy", "ttsd")
    for problem in problems:
        assert problem.source == "ttsd"
        assert (examples_dir / f"{problem.id}.json").is_file(), "file name is <id>.json"
        assert len(problem.tests) >= 2 and len(problem.hidden_tests) > len(problem.tests), problem.id
        assert (examples_dir / "solutions" / f"{problem.id}.py").is_file(), f"{problem.id} has no reference solution"
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
        (good_problem(kind="interactive"), "kind: input should be 'stdin', 'functional', 'assert' or 'evalplus'"),
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


# ---------------------------------------------------------------- LiveCodeBench importer


def lcb_line(question_id: str, *, functional: bool = False, private: str = "", date_: str = "2025-03-01T00:00:00", public=None) -> dict:
    if public is None:
        public = (
            [{"input": "[1, 2]\n3", "output": "6", "testtype": "functional"}]
            if functional
            else [{"input": "1 2\n", "output": "3\n", "testtype": "stdin"}]
        )
    return {
        "question_title": f"Title {question_id}",
        "question_content": f"Statement of {question_id}.",
        "platform": "leetcode" if functional else "atcoder",
        "question_id": question_id,
        "contest_id": "c1",
        "contest_date": date_,
        "starter_code": "class Solution:\n    def total(self, xs: List[int], k: int) -> int:\n        " if functional else "",
        "difficulty": "hard",
        "public_test_cases": json.dumps(public),
        "private_test_cases": private,
        "metadata": json.dumps({"func_name": "total"} if functional else {}),
    }


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


PRIVATE = [{"input": f"{i} {i}\n", "output": f"{2 * i}\n", "testtype": "stdin"} for i in range(10)]


def test_encoded_private_tests_decode_to_hidden_tests(tmp_path):
    blob = encode_lcb_private_tests(PRIVATE)
    # the official encoding, built by hand here: base64(zlib(pickle(json string)))
    assert blob == base64.b64encode(zlib.compress(pickle.dumps(json.dumps(PRIVATE)))).decode()
    assert [t.output for t in decode_lcb_tests(blob)] == [t["output"] for t in PRIVATE]
    assert [t.input for t in decode_lcb_tests(json.dumps(PRIVATE))] == [t["input"] for t in PRIVATE]
    assert decode_lcb_tests("") == []

    source = write_jsonl(tmp_path / "lcb.jsonl", [lcb_line("abc1_a", private=blob), lcb_line("3001", functional=True)])
    report = import_lcb(source, tmp_path / "out")
    assert [p.name for p in report.written] == ["abc1_a.json", "3001.json"]
    stdin_problem = load_problem(tmp_path / "out" / "abc1_a.json")
    assert stdin_problem.kind == "stdin" and stdin_problem.entry_point is None
    assert [t.input for t in stdin_problem.tests] == ["1 2\n"]
    assert [t.output for t in stdin_problem.hidden_tests] == [t["output"] for t in PRIVATE]
    assert (stdin_problem.title, stdin_problem.difficulty, stdin_problem.source) == ("Title abc1_a", "hard", "lcb:atcoder")
    assert stdin_problem.contest_date.date() == date(2025, 3, 1)
    functional = load_problem(tmp_path / "out" / "3001.json")
    assert (functional.kind, functional.entry_point) == ("functional", "total")
    assert functional.starter_code.startswith("class Solution:")
    assert functional.tests == [TestCase(input="[1, 2]\n3", output="6")] and functional.hidden_tests == []
    assert (report.visible_tests, report.hidden_tests) == (2, 10)


def test_visible_fraction_moves_a_seeded_random_half_of_the_hidden_tests(tmp_path):
    source = write_jsonl(tmp_path / "lcb.jsonl", [lcb_line("abc1_a", private=encode_lcb_private_tests(PRIVATE))])

    def split(seed: int, fraction: float = 0.5) -> Problem:
        out = tmp_path / f"out-{seed}-{fraction}"
        import_lcb(source, out, visible_fraction=fraction, seed=seed)
        return load_problem(out / "abc1_a.json")

    first, again, other = split(1), split(1), split(2)
    assert len(first.tests) == 1 + 5 and len(first.hidden_tests) == 5
    assert first.tests[0].input == "1 2\n", "public tests stay first"
    assert first == again, "the same seed gives the same split"
    assert {t.input for t in first.tests} != {t.input for t in other.tests}, "another seed gives another split"
    all_private = {t["input"] for t in PRIVATE}
    assert {t.input for t in first.tests[1:]} | {t.input for t in first.hidden_tests} == all_private
    assert not {t.input for t in first.tests[1:]} & {t.input for t in first.hidden_tests}
    assert len(split(1, 1.0).hidden_tests) == 0 and len(split(1, 0.0).hidden_tests) == 10


def test_split_visible_rounds_half_up_and_rejects_bad_fractions():
    import random

    tests = [TestCase(input=str(i)) for i in range(3)]
    visible, hidden = split_visible([], tests, 0.5, random.Random(0))
    assert (len(visible), len(hidden)) == (2, 1)  # 1.5 rounds to 2
    with pytest.raises(ValueError, match="visible_fraction"):
        split_visible([], tests, 1.5, random.Random(0))


class _RunsShellCommand:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_rejected_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    evil = base64.b64encode(zlib.compress(pickle.dumps(_RunsShellCommand(marker)))).decode()
    with pytest.raises(LcbDecodeError, match="refused to load global (posix|os).system"):
        decode_lcb_tests(evil)
    source = write_jsonl(tmp_path / "lcb.jsonl", [lcb_line("ok_1"), lcb_line("evil_1", private=evil)])
    with pytest.raises(ProblemFileError) as caught:
        import_lcb(source, tmp_path / "out")
    assert str(caught.value).startswith(f"{source}:2: private_test_cases: bad pickle: refused to load global")
    assert not marker.exists(), "the pickle's payload ran"
    assert not (tmp_path / "out").exists(), "nothing is written when a line is bad"
    # builtins other than str/list/dict are refused too (eval would run code)
    eval_pickle = pickle.dumps(eval)
    with pytest.raises(pickle.UnpicklingError, match="builtins.eval"):
        safe_unpickle(eval_pickle)
    assert safe_unpickle(pickle.dumps({"a": ["b"]})) == {"a": ["b"]}


def test_undecodable_private_tests_give_clear_errors():
    with pytest.raises(LcbDecodeError, match="neither JSON nor base64"):
        decode_lcb_tests("not json, not base64!")
    with pytest.raises(LcbDecodeError, match="not zlib data"):
        decode_lcb_tests(base64.b64encode(b"plain bytes").decode())
    with pytest.raises(LcbDecodeError, match="exceed 1000 bytes"):
        decode_lcb_tests(base64.b64encode(zlib.compress(b"x" * 100_000)).decode(), limit=1000)
    truncated = base64.b64encode(zlib.compress(pickle.dumps(json.dumps(PRIVATE)))[:-10]).decode()
    with pytest.raises(LcbDecodeError, match="incomplete or truncated"):
        decode_lcb_tests(truncated)
    with pytest.raises(LcbDecodeError, match=r"\[0\]\.testtype"):
        decode_lcb_tests(json.dumps([{"input": "1", "output": "2", "testtype": "interactive"}]))


def test_date_window_is_inclusive_and_bad_lines_name_file_and_line(tmp_path):
    records = [lcb_line(f"q{day}", date_=f"2025-02-{day:02d}T12:00:00") for day in (1, 2, 3, 4)]
    source = write_jsonl(tmp_path / "lcb.jsonl", records)
    report = import_lcb(source, tmp_path / "out", start_date=date(2025, 2, 2), end_date=date(2025, 2, 3))
    assert sorted(p.name for p in report.written) == ["q2.json", "q3.json"]
    assert (report.records, report.outside_window) == (4, 2)

    broken = dict(lcb_line("q9"))
    del broken["question_content"]
    source = write_jsonl(tmp_path / "bad.jsonl", [lcb_line("q8"), broken])
    with pytest.raises(ProblemFileError, match=r"bad.jsonl:2: question_content: field required"):
        import_lcb(source, tmp_path / "out2")
    functional_without_name = lcb_line("q7", functional=True)
    functional_without_name["metadata"] = "{}"
    source = write_jsonl(tmp_path / "nofunc.jsonl", [functional_without_name])
    with pytest.raises(ProblemFileError, match=r"nofunc.jsonl:1: metadata.func_name: required"):
        import_lcb(source, tmp_path / "out3")
    with pytest.raises(ProblemFileError, match="no such file"):
        import_lcb(tmp_path / "absent.jsonl", tmp_path / "out4")


@pytest.mark.skipif(not LCB_V6.exists(), reason="needs the shared LiveCodeBench data")
def test_import_real_livecodebench_v6(tmp_path):
    report = import_lcb(LCB_V6, tmp_path / "all", visible_fraction=0.5, seed=0)
    assert len(report.written) == 175
    problems = load_problems(tmp_path / "all")
    assert {p.kind for p in problems} == {"stdin", "functional"}
    assert all(p.entry_point for p in problems if p.kind == "functional")
    window = import_lcb(LCB_V6, tmp_path / "window", start_date=date(2025, 2, 1), end_date=date(2025, 5, 1))
    assert len(window.written) == 131 and window.outside_window == 44


def test_import_humaneval_from_the_installed_package(tmp_path):
    report = import_humaneval(tmp_path / "he")
    assert len(report.written) == 164
    problem = load_problem(tmp_path / "he" / "humaneval-0.json")
    assert (problem.kind, problem.entry_point, problem.source) == ("assert", "has_close_elements", "humaneval")
    assert problem.starter_code.startswith("from typing import List")
    assert "def check(candidate):" in problem.tests[0].input and problem.hidden_tests == []
    assert len({p.id for p in iter_humaneval_problems()}) == 164


# ---------------------------------------------------------------- CLI


def test_cli_validate_list_and_show(tmp_path):
    result = runner.invoke(app, ["problems", "validate", str(EXAMPLES_DIR)])
    assert result.exit_code == 0, result.output
    assert result.stdout.count("ok ") == len(list(EXAMPLES_DIR.glob("*.json")))

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


def test_cli_imports(tmp_path):
    source = write_jsonl(tmp_path / "lcb.jsonl", [lcb_line("abc1_a", private=encode_lcb_private_tests(PRIVATE))])
    out = tmp_path / "out"
    args = ["problems", "import", "lcb", str(source), "--out", str(out), "--visible-fraction", "0.5", "--seed", "3"]
    result = runner.invoke(app, args + ["--start-date", "2025-01-01", "--end-date", "2025-12-31"])
    assert result.exit_code == 0, result.output
    assert "wrote 1 problems" in result.stdout
    assert len(load_problem(out / "abc1_a.json").hidden_tests) == 5

    result = runner.invoke(app, args + ["--start-date", "2025-12-01", "--end-date", "2025-01-01"])
    assert result.exit_code == 2 and "is after --end-date" in result.stderr
    result = runner.invoke(app, ["problems", "import", "lcb", str(source), "--out", str(out), "--visible-fraction", "2"])
    assert result.exit_code == 2

    evil = write_jsonl(tmp_path / "evil.jsonl", [lcb_line("x", private=base64.b64encode(zlib.compress(pickle.dumps(eval))).decode())])
    result = runner.invoke(app, ["problems", "import", "lcb", str(evil), "--out", str(tmp_path / "evil-out")])
    assert result.exit_code == 2 and "refused to load global builtins.eval" in result.stderr

    result = runner.invoke(app, ["problems", "import", "humaneval", "--out", str(tmp_path / "he")])
    assert result.exit_code == 0 and "wrote 164 problems" in result.stdout
    result = runner.invoke(app, ["problems", "import", "humaneval", "--out", str(tmp_path / "he2"), "--data", str(tmp_path / "none.jsonl")])
    assert result.exit_code == 2 and "none.jsonl: no such file" in result.stderr


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


# ---------------------------------------------------------------- MBPP+


MBPP_PLUS = SHARED / "data" / "mbpp_plus" / "MbppPlus_767efcc.jsonl"


@pytest.fixture(scope="module")
def local_sandbox():
    from ttsd.sandbox import make_sandbox

    sandbox = make_sandbox("local")
    yield sandbox
    sandbox.close()


def test_mbpp_plus_whole_release_imports_and_every_canonical_solution_is_accepted(tmp_path, local_sandbox):
    from ttsd.judge import Judge
    from ttsd.problems.importers import import_mbpp_plus, iter_mbpp_plus_rows

    report = import_mbpp_plus(MBPP_PLUS, tmp_path, local_sandbox, verify=False)
    assert report.records == 399
    # two lines of the release are unusable: Mbpp/255's canonical solution needs more than the
    # memory limit on one plus input, and Mbpp/793's plus_input is {} instead of a list
    assert {s.where.rsplit(":", 1)[1]: s.reason.split(" (")[0] for s in report.skipped} == {
        "127": "canonical_solution: did not return on plus_input[85]",
        "385": "plus_input: input should be a valid array",
    }
    assert len(report.written) == 397 and report.visible_tests > 1000 and report.hidden_tests > 40000
    problems = {p.id: p for p in load_problems(tmp_path)}
    assert {p.kind for p in problems.values()} == {"evalplus"}
    assert problems["mbpp-2"].output_match == "set" and problems["mbpp-124"].atol == 0.0001
    assert problems["mbpp-737"].output_match == "not_none" and problems["mbpp-295"].hidden_tests[0].also_accepted == ["0"]
    assert "similar_elements" in problems["mbpp-2"].statement and "assert similar_elements(" in problems["mbpp-2"].statement
    references = {f"mbpp-{row.record.number}": row.record.reference_code for row in iter_mbpp_plus_rows(MBPP_PLUS) if row.record}
    rejected = {}
    with Judge(local_sandbox, max_workers=2) as judge:
        for problem_id, problem in problems.items():
            judgement = judge.judge_program(problem, references[problem_id])
            if not judgement.passed or judgement.tests_passed != len(problem.all_tests):
                rejected[problem_id] = judgement.feedback[:200]
    assert rejected == {}


def test_mbpp_plus_bad_lines_are_reported_and_the_rest_imported(tmp_path):
    good = {
        "task_id": "Mbpp/900", "prompt": "'''\nWrite a function to add two numbers.\n'''", "entry_point": "add",
        "canonical_solution": "\ndef add(a, b):\n    return a + b\n", "base_input": [[1, 2]], "plus_input": [[0.1, 0.2], [-5, 5]],
        "atol": 0, "assertion": "\nassert add(1, 2) == 3\n",
    }
    raises = dict(good, task_id="Mbpp/901", canonical_solution="\ndef add(a, b):\n    return a / (b - 5)\n")
    lines = [json.dumps(good), '{"task_id": "Mbpp/902"}', "not json", json.dumps(raises)]
    data = write_json(tmp_path / "mbpp.jsonl", "\n".join(lines) + "\n")
    result = runner.invoke(app, ["problems", "import", "mbpp-plus", str(data), "--out", str(tmp_path / "out")], terminal_width=300)
    assert result.exit_code == 0, result.output
    assert "wrote 1 of 4 problems" in result.output and "3 skipped" in result.output
    assert "mbpp.jsonl:2: prompt: field required" in result.output
    assert "mbpp.jsonl:3: invalid JSON" in result.output
    assert "mbpp.jsonl:4: canonical_solution: raised ZeroDivisionError: division by zero on plus_input[1]" in result.output
    problem = load_problem(tmp_path / "out" / "mbpp-900.json")
    assert [t.input for t in problem.tests] == ["[1, 2]"] and [t.output for t in problem.hidden_tests] == ["0.30000000000000004", "0"]
    assert problem.statement.endswith("Your code should pass this test:\n\nassert add(1, 2) == 3")
    missing = runner.invoke(app, ["problems", "import", "mbpp-plus", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o")])
    assert missing.exit_code == 2 and "no such file" in missing.output

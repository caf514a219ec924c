"""`ttsd check`: exit codes, rich and --json output, bare programs and model responses, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ttsd.cli import app

EXAMPLES = Path(__file__).resolve().parent.parent / "problems" / "examples"
PROBLEM = EXAMPLES / "sum-two-numbers.json"
RIGHT = EXAMPLES / "solutions" / "sum-two-numbers.py"
WRONG = EXAMPLES / "solutions" / "sum-two-numbers.wrong.py"
JSON_KEYS = {"passed", "verdict", "tests_passed", "tests_total", "feedback", "wall_s"}

runner = CliRunner()


def check(*args: str):
    return runner.invoke(app, ["check", *args])


def test_accepted_exits_0_with_a_rich_summary():
    result = check(str(PROBLEM), str(RIGHT))
    assert result.exit_code == 0, result.output
    assert "ACCEPTED" in result.stdout
    assert "13/13 tests passed" in result.stdout


def test_rejected_exits_1_and_shows_feedback():
    result = check(str(PROBLEM), str(WRONG))
    assert result.exit_code == 1, result.output
    assert "WRONG ANSWER" in result.stdout
    assert "Expected:" in result.stdout and "Wrong Answer (2 of 3 visible tests failed)" in result.stdout


def test_json_has_exactly_the_documented_keys():
    result = check(str(PROBLEM), str(WRONG), "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert set(report) == JSON_KEYS
    assert report["passed"] is False and report["verdict"] == "wrong_answer"
    assert report["tests_total"] == 13 and report["tests_passed"] == 1
    assert report["feedback"].startswith("Wrong Answer") and report["wall_s"] > 0

    accepted = json.loads(check("sum-two-numbers", str(RIGHT), "--json").stdout)  # a problem id works too
    assert accepted == {**accepted, "passed": True, "verdict": "accepted", "tests_passed": 13, "feedback": ""}


def test_solution_may_be_a_whole_model_response(tmp_path):
    response = tmp_path / "response.md"
    response.write_text(f"Let me think.\n\n```python\n{RIGHT.read_text()}\n```\n\nThis adds the numbers.\n")
    assert check(str(PROBLEM), str(response), "--json").exit_code == 0
    no_code = tmp_path / "prose.md"
    no_code.write_text("```text\nI would add the two numbers.\n```\n")
    result = check(str(PROBLEM), str(no_code), "--json")
    assert result.exit_code == 1 and json.loads(result.stdout)["verdict"] == "format_error"


def test_bad_input_exits_2_with_one_clear_message(tmp_path):
    missing = check(str(tmp_path / "nope.json"), str(RIGHT))
    assert missing.exit_code == 2 and "nope.json" in missing.stderr and "Traceback" not in missing.output

    malformed = tmp_path / "bad.json"
    malformed.write_text('{"id": "x", "statement": "s", "kind": "stdin", "time_limit_s": -1}')
    bad = check(str(malformed), str(RIGHT))
    assert bad.exit_code == 2 and "bad.json" in bad.stderr and "time_limit_s" in bad.stderr

    no_solution = check(str(PROBLEM), str(tmp_path / "missing.py"))
    assert no_solution.exit_code == 2 and "missing.py: no such file" in no_solution.stderr

    binary = tmp_path / "binary.py"
    binary.write_bytes(b"\xff\xfe\x00print(1)")
    not_text = check(str(PROBLEM), str(binary))
    assert not_text.exit_code == 2 and "not UTF-8" in not_text.stderr

    assert check(str(PROBLEM), str(tmp_path)).exit_code == 2  # a directory
    assert check(str(PROBLEM), str(RIGHT), "--sandbox", "vm").exit_code == 2


@pytest.mark.docker
def test_check_in_docker():
    result = check(str(PROBLEM), str(RIGHT), "--sandbox", "docker", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["verdict"] == "accepted"
    wrong = check(str(PROBLEM), str(WRONG), "--sandbox", "docker", "--json")
    assert wrong.exit_code == 1 and json.loads(wrong.stdout)["verdict"] == "wrong_answer"


def test_a_pytest_file_that_does_not_collect_is_bad_input_at_load(tmp_path):
    from ttsd.problems.folders import EXAMPLE_SOLUTION, scaffold_folder

    folder = tmp_path / "p"
    scaffold_folder(folder)
    (folder / "test_hidden.py").write_text("import not_installed_anywhere\n\ndef test_x():\n    pass\n")
    result = check(str(folder), str(folder / EXAMPLE_SOLUTION))
    assert result.exit_code == 2, result.output
    assert f"{folder / 'test_hidden.py'}: hidden_test_file: pytest could not collect test_hidden.py" in result.output
    assert "No module named 'not_installed_anywhere'" in result.output
    assert "Traceback (most recent call last)" not in result.output


def test_bad_input_that_once_gave_a_traceback_or_an_unbounded_read_exits_2_naming_the_file(tmp_path):
    """#24: deep nesting, a lone surrogate in a test, a problem or solution that is /dev/zero."""
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100000)
    surrogate = tmp_path / "surrogate.json"
    surrogate.write_text('{"id": "s", "statement": "s", "tests": [{"input": "\\ud800", "output": "1"}]}')
    zero = tmp_path / "zero.json"
    zero.symlink_to("/dev/zero")
    zero_solution = tmp_path / "zero.py"
    zero_solution.symlink_to("/dev/zero")
    for problem, solution, named, says in [
        (deep, RIGHT, "deep.json", "nested more than 200 levels deep"),
        (surrogate, RIGHT, "surrogate.json: tests[0].input", "lone surrogate"),
        (zero, RIGHT, "zero.json", "not a regular file"),
        (PROBLEM, zero_solution, "zero.py", "not a regular file"),
    ]:
        result = check(str(problem), str(solution))
        assert result.exit_code == 2 and named in result.stderr and says in result.stderr, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exception


def test_every_verdict_has_its_headline_style():
    from ttsd.cli.check import verdict_style
    from ttsd.judge.records import Verdict

    styles = {verdict: verdict_style(verdict) for verdict in Verdict}  # a missing one raises KeyError
    assert styles[Verdict.accepted] == "bold green"
    assert {styles[Verdict.format_error], styles[Verdict.truncated]} == {"bold yellow"}
    assert all(style == "bold red" for verdict, style in styles.items()
               if verdict not in (Verdict.accepted, Verdict.format_error, Verdict.truncated))

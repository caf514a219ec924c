"""The MBPP+ importer (ttsd/importers/mbpp_plus.py) and `ttsd problems import mbpp-plus`."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tests.conftest import SHARED
from ttsd.cli import app
from ttsd.importers.mbpp_plus import import_mbpp_plus, iter_mbpp_plus_rows
from ttsd.judge import Judge
from ttsd.problems import load_problem, load_problems

runner = CliRunner()

MBPP_PLUS = SHARED / "data" / "mbpp_plus" / "MbppPlus_767efcc.jsonl"


@pytest.fixture(scope="module")
def local_sandbox():
    from ttsd.sandbox import make_sandbox

    sandbox = make_sandbox("local")
    yield sandbox
    sandbox.close()


def test_mbpp_plus_whole_release_imports_and_every_canonical_solution_is_accepted(tmp_path, local_sandbox):
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
    data = tmp_path / "mbpp.jsonl"
    data.write_text("\n".join(lines) + "\n")
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

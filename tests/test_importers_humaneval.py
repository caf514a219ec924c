"""The HumanEval importer (ttsd/importers/humaneval.py) and `ttsd problems import humaneval`."""

from __future__ import annotations

from typer.testing import CliRunner

from ttsd.cli import app
from ttsd.importers.humaneval import import_humaneval, iter_humaneval_problems
from ttsd.problems import load_problem

runner = CliRunner()


def test_import_humaneval_from_the_installed_package(tmp_path):
    report = import_humaneval(tmp_path / "he")
    assert len(report.written) == 164
    problem = load_problem(tmp_path / "he" / "humaneval-0.json")
    assert (problem.kind, problem.entry_point, problem.source) == ("assert", "has_close_elements", "humaneval")
    assert problem.starter_code.startswith("from typing import List")
    assert "def check(candidate):" in problem.tests[0].input and problem.hidden_tests == []
    assert len({p.id for p in iter_humaneval_problems()}) == 164


def test_cli_import_humaneval(tmp_path):
    result = runner.invoke(app, ["problems", "import", "humaneval", "--out", str(tmp_path / "he")])
    assert result.exit_code == 0 and "wrote 164 problems" in result.stdout
    result = runner.invoke(app, ["problems", "import", "humaneval", "--out", str(tmp_path / "he2"), "--data", str(tmp_path / "none.jsonl")])
    assert result.exit_code == 2 and "none.jsonl: no such file" in result.stderr

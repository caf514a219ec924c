"""The HumanEval importer (ttsd/importers/humaneval.py) and `ttsd problems import humaneval`."""

from __future__ import annotations

import gzip
import json

from typer.testing import CliRunner

from ttsd.cli import app
from ttsd.importers.humaneval import humaneval_data_path, import_humaneval, iter_humaneval_problems
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


def test_the_test_code_uses_the_starter_helpers_not_the_programs():
    """HumanEval/38 checks decode_cyclic(encode_cyclic(s)) == s with the namespace's encode_cyclic:
    a program that makes encode_cyclic the identity and decodes with it used to pass."""
    from ttsd.judge import Judge
    from ttsd.sandbox import make_sandbox

    problems = {p.id: p for p in iter_humaneval_problems()}
    before_check = {pid: p.tests[0].input.split("METADATA")[0] for pid, p in problems.items()}
    assert "def poly(" in before_check["humaneval-32"] and before_check["humaneval-32"].startswith("import math")
    assert before_check["humaneval-38"].startswith("def encode_cyclic(")
    assert before_check["humaneval-50"].startswith("def encode_shift(")
    with gzip.open(humaneval_data_path(), "rt", encoding="utf-8") as lines:
        records = [json.loads(line) for line in lines]
    raw = {r["task_id"].replace("HumanEval/", "humaneval-"): r["test"] for r in records}
    changed = sorted(pid for pid, p in problems.items() if p.tests[0].input != raw[pid])
    assert changed == ["humaneval-32", "humaneval-38", "humaneval-50"]
    assert all(problems[pid].tests[0].input.endswith(raw[pid]) for pid in changed)

    cheat = (
        "def encode_cyclic(s: str):\n    return s\n\n\n"
        "def decode_cyclic(s: str):\n    return encode_cyclic(s)\n"
    )
    honest = problems["humaneval-38"].starter_code + "    return encode_cyclic(encode_cyclic(s))\n"
    cheat_poly = (  # humaneval-32: a poly that is 0 everywhere makes any root "correct"
        "def poly(xs, x):\n    return 0.0\n\n\ndef find_zero(xs):\n    return 0.0\n"
    )
    sandbox = make_sandbox("local")
    judge = Judge(sandbox, max_workers=2)
    try:
        assert not judge.judge_program(problems["humaneval-38"], cheat).passed
        assert judge.judge_program(problems["humaneval-38"], honest).passed
        assert not judge.judge_program(problems["humaneval-32"], cheat_poly).passed
    finally:
        judge.close()
        sandbox.close()

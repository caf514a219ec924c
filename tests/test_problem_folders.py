"""Problem folders (ttsd/problems/folders.py): loading with errors that name the file and field,
finding them by id, `ttsd problems new`, and the bundled pytest example judged end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ttsd.cli import app
from ttsd.problems import EXAMPLES_DIR, ProblemFileError, find_problem, load_problem, load_problems
from ttsd.problems.folders import EXAMPLE_SOLUTION, load_problem_folder, scaffold_folder

runner = CliRunner()


def error_of(path: Path) -> str:
    with pytest.raises(ProblemFileError) as caught:
        load_problem(path)
    return str(caught.value)


def test_a_scaffolded_folder_loads_as_a_pytest_problem(tmp_path):
    folder = tmp_path / "rle"
    written = scaffold_folder(folder)
    assert {p.name for p in written} == {"problem.toml", "statement.md", "starter.py", "test_visible.py", "test_hidden.py", EXAMPLE_SOLUTION}
    problem = load_problem(folder)
    assert (problem.id, problem.kind, problem.module_name, problem.time_limit_s) == ("rle", "pytest", "solution", 2.0)
    assert problem.statement == (folder / "statement.md").read_text()
    assert problem.starter_code.startswith("def encode(text: str)")
    assert "def test_example" in problem.test_file and "def test_long_run" in problem.hidden_test_file
    with pytest.raises(FileExistsError):
        scaffold_folder(folder)


def test_metadata_may_be_json_and_kind_defaults_to_pytest(tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "problem.json").write_text(json.dumps({"id": "given-id", "title": "t"}))
    (folder / "statement.md").write_text("Say hi.")
    (folder / "test_visible.py").write_text("def test_x():\n    pass\n")
    problem = load_problem_folder(folder)
    assert (problem.id, problem.kind, problem.hidden_test_file, problem.starter_code) == ("given-id", "pytest", None, "")


@pytest.mark.parametrize(
    "files, where, expected",
    [
        ({"test_visible.py": "def test_x(:\n"}, "test_visible.py", "test_file: not valid Python (line 1"),
        ({"test_hidden.py": "import x\n"}, "test_hidden.py", "hidden_test_file: defines no test function"),
        ({"problem.toml": 'time_limit_s = -1\n'}, "problem.toml", "time_limit_s: input should be greater than 0"),
        ({"problem.toml": 'colour = "red"\n'}, "problem.toml", "colour: unknown field"),
        ({"problem.toml": 'title = "unterminated\n'}, "problem.toml", "invalid TOML"),
        ({"problem.toml": 'statement = "twice"\n'}, "problem.toml", "statement: given here and in statement.md: keep one"),
        ({"statement.md": ""}, "statement.md", "statement: string should have at least 1 character"),
        ({"problem.json": "{}"}, "", "has both problem.toml and problem.json: keep one"),
        ({"starter.py": b"\xff\xfe"}, "starter.py", "not UTF-8 text"),
    ],
)
def test_errors_name_the_file_and_the_field(tmp_path, files, where, expected):
    folder = tmp_path / "bad"
    scaffold_folder(folder)
    for name, content in files.items():
        (folder / name).write_bytes(content) if isinstance(content, bytes) else (folder / name).write_text(content)
    message = error_of(folder)
    assert message.startswith(f"{folder / where if where else folder}: "), message
    assert expected in message, message


def test_every_bad_file_is_named_at_once(tmp_path):
    folder = tmp_path / "bad"
    scaffold_folder(folder)
    (folder / "statement.md").write_text("")
    (folder / "problem.toml").write_text("memory_limit_mb = 0\n")
    message = error_of(folder)
    assert f"{folder / 'statement.md'}: statement: string should have at least 1 character" in message
    assert f"{folder / 'problem.toml'}: memory_limit_mb: input should be greater than 0" in message


def test_a_plain_directory_is_not_a_problem(tmp_path):
    assert "expected a problem .json file or a problem folder" in error_of(tmp_path)


def test_folders_are_found_by_id_and_listed_with_the_json_files(tmp_path):
    scaffold_folder(tmp_path / "pool" / "deep" / "rle")
    (tmp_path / "pool" / "one.json").write_text(json.dumps({"id": "one", "statement": "s", "tests": [{"input": "", "output": ""}]}))
    assert find_problem("rle", [tmp_path / "pool"]).kind == "pytest"
    assert find_problem(str(tmp_path / "pool" / "deep" / "rle")).id == "rle"
    scaffold_folder(tmp_path / "pool" / "two")
    assert sorted(p.id for p in load_problems(tmp_path / "pool")) == ["one", "two"]  # direct children only
    assert [p.id for p in load_problems(tmp_path / "pool" / "two")] == ["two"]


def test_problems_new_scaffolds_a_folder_that_check_accepts_with_the_example_solution(tmp_path):
    folder = tmp_path / "mine"
    made = runner.invoke(app, ["problems", "new", str(folder), "--kind", "pytest"])
    assert made.exit_code == 0, made.output
    assert f"ttsd check {folder} {folder / EXAMPLE_SOLUTION}" in made.stdout
    accepted = runner.invoke(app, ["check", str(folder), str(folder / EXAMPLE_SOLUTION), "--json"])
    assert accepted.exit_code == 0, accepted.output
    assert json.loads(accepted.stdout)["tests_total"] == 6
    rejected = runner.invoke(app, ["check", str(folder), str(folder / "starter.py")])
    assert rejected.exit_code == 1 and "pytest report:" in rejected.stdout
    again = runner.invoke(app, ["problems", "new", str(folder)])
    assert again.exit_code == 2 and "already exists" in again.output


def test_the_bundled_pytest_example_accepts_its_solution_and_rejects_the_wrong_one():
    folder = EXAMPLES_DIR / "count-vowels"
    right = runner.invoke(app, ["check", str(folder), str(EXAMPLES_DIR / "solutions" / "count-vowels.py"), "--json"])
    assert right.exit_code == 0, right.output
    assert json.loads(right.stdout)["tests_passed"] == 9
    wrong = runner.invoke(app, ["check", "count-vowels", str(EXAMPLES_DIR / "solutions" / "count-vowels.wrong.py"), "--json"])
    assert wrong.exit_code == 1
    assert "assert count_vowels(\"AEIOU\") == 5" in json.loads(wrong.stdout)["feedback"]


def test_solve_reports_a_test_file_that_does_not_collect_before_loading_a_model(tmp_path):
    folder = tmp_path / "p"
    scaffold_folder(folder)
    (folder / "test_visible.py").write_text("from solution import encode\nimport missing_helper_module\n\ndef test_x():\n    pass\n")
    result = runner.invoke(app, ["solve", str(folder), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    assert f"{folder / 'test_visible.py'}: test_file: pytest could not collect" in result.output
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name, text", [
    ("problem.toml", "a = " + "[" * 5000 + "]" * 5000 + "\n"),
    ("problem.json", "[" * 100000),
])
def test_deeply_nested_metadata_is_refused_without_recursion(tmp_path, name, text):
    folder = tmp_path / "deep"
    folder.mkdir()
    (folder / name).write_text(text)
    with pytest.raises(ProblemFileError, match="nested more than 200 levels deep") as caught:
        load_problem_folder(folder)
    assert name in str(caught.value)


def test_a_folder_file_that_is_not_a_regular_file_is_refused(tmp_path):
    folder = tmp_path / "p"
    scaffold_folder(folder)
    (folder / "statement.md").unlink()
    (folder / "statement.md").symlink_to("/dev/zero")
    with pytest.raises(ProblemFileError, match="not a regular file") as caught:
        load_problem_folder(folder)
    assert "statement.md" in str(caught.value)


def test_bench_reports_a_test_file_that_does_not_collect_before_any_run(tmp_path):
    problems = tmp_path / "problems"
    folder = problems / "p"
    scaffold_folder(folder)
    (folder / "test_visible.py").write_text("from solution import encode\nimport missing_helper_module\n\ndef test_x():\n    pass\n")
    out = tmp_path / "bench"
    result = runner.invoke(app, ["bench", "--split", str(problems), "--methods", "best-of-k", "--pool", "0", "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "test_visible.py: test_file: pytest could not collect" in result.output
    assert not (out / "runs").exists()  # no run was started on the broken problem

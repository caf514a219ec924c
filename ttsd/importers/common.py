"""What the importers share: the import report, file-safe ids, JSONL lines, unique ids, and the
note that says how a folder was imported (so a split over it can say how to recreate it)."""

from __future__ import annotations

import gzip
import re
import shlex
import zlib
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel, Field

from ttsd.problems.loading import MAX_FILE_BYTES, ProblemFileError
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
    """(`FILE:LINE`, line) for every non-blank line of a .jsonl or .jsonl.gz file. A line that is
    not UTF-8, longer than MAX_FILE_BYTES, or a .gz file that is not gzip or is cut short raises
    ProblemFileError naming the file (and the line); only regular files are read."""
    path = Path(path)
    if not path.is_file():
        raise ProblemFileError(path, [("", "no such file" if not path.exists() else "not a regular file")])
    line_number = 0
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as lines:
            while line := lines.readline(MAX_FILE_BYTES + 1):
                line_number += 1
                where = f"{path}:{line_number}"
                if len(line) > MAX_FILE_BYTES:
                    raise ProblemFileError(where, [("", f"a line longer than the {MAX_FILE_BYTES >> 20} MiB ttsd reads")])
                try:
                    text = line.decode("utf-8")
                except UnicodeDecodeError as error:
                    raise ProblemFileError(where, [("", f"not UTF-8 text ({error.reason} at byte {error.start} of the line)")]) from None
                if text.strip():
                    yield where, text
    except gzip.BadGzipFile as error:
        raise ProblemFileError(path, [("", f"not gzip data ({error})")]) from None
    except (EOFError, zlib.error) as error:  # a .gz cut short, or corrupt inside
        raise ProblemFileError(path, [("", f"the gzip data is truncated or corrupt after line {line_number} ({error})")]) from None


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

"""Reading and writing `problem.json` files, with errors that name the file, the field and the fault.

    problem = load_problem("problems/examples/sum-two-numbers.json")
    problems = load_problems("problems/examples")          # a file or a directory of *.json
    problem = find_problem("sum-two-numbers", [Path("problems")])   # an id or a file
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path

from pydantic import ValidationError

from ttsd.problems.model import MAX_NESTING, Problem, nesting_depth

MAX_FILE_BYTES = 256 << 20  # the largest problem (or solution, split, import) file ttsd reads: 256 MiB

# The bundled examples live beside the package in the checkout (the package is installed editable).
EXAMPLES_DIR = Path(__file__).resolve().parent.parent.parent / "problems" / "examples"


class ProblemFileError(ValueError):
    """A problem file that cannot be used. `str(error)` is the whole message, one line per fault:
    `problems/x.json: tests[2].output: field required`."""

    def __init__(self, path: Path | str, faults: Sequence[tuple[str, str]]):
        self.path = Path(path)
        self.faults = list(faults)  # (field path or "", what is wrong)
        super().__init__("\n".join(_fault_line(self.path, field, message) for field, message in self.faults))


class ProblemFilesError(ProblemFileError):
    """Several bad files at once (from `load_problems`): every file's faults, one per line."""

    def __init__(self, path: Path | str, errors: Sequence[ProblemFileError]):
        self.path = Path(path)
        self.errors = list(errors)
        self.faults = [fault for error in self.errors for fault in error.faults]
        ValueError.__init__(self, "\n".join(str(error) for error in self.errors))


def _fault_line(path: Path, field: str, message: str) -> str:
    return f"{path}: {field}: {message}" if field else f"{path}: {message}"


def format_location(loc: Iterable[str | int]) -> str:
    """('tests', 2, 'output') -> 'tests[2].output'."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _lower_first(message: str) -> str:
    return message[:1].lower() + message[1:]


def validation_faults(error: ValidationError) -> list[tuple[str, str]]:
    """Turn pydantic's errors into (field path, message) pairs, one per fault."""
    faults: list[tuple[str, str]] = []
    for item in error.errors(include_url=False):
        loc = item.get("loc", ())
        if not loc and item.get("type") == "value_error":
            # The model's own semantic check: its message is already "field: message" per line.
            raw = str(item.get("ctx", {}).get("error", item["msg"]))
            for line in raw.splitlines():
                field, _, message = line.partition(": ")
                faults.append((field, message) if message else ("", line))
            continue
        message = _lower_first(item["msg"])
        if item.get("type") == "extra_forbidden":
            message = "unknown field (not part of the problem format)"
        elif tuple(loc) == ("id",) and item.get("type") == "string_pattern_mismatch":
            message = (
                "must start with a letter or digit and contain only letters, digits, '.', '_' and '-'"
                f" (it names the file <id>.json; got {item['input']!r})"
            )
        elif item.get("type") not in ("missing",) and "input" in item and not isinstance(item["input"], (dict, list)):
            shown = repr(item["input"])
            message += f" (got {shown[:60] + '...' if len(shown) > 60 else shown})"
        faults.append((format_location(loc), message))
    return faults


class FileTooBig(ValueError):
    """A file ttsd refuses to read: not a regular file, or larger than its limit. The message says which."""


def read_bounded(path: Path | str, limit: int | None = None) -> bytes:
    """The bytes of a regular file of at most `limit` bytes (None: MAX_FILE_BYTES). Raises FileTooBig for anything else (a
    device such as /dev/zero, a FIFO, a socket, a symlink to one, a bigger file: ttsd never reads
    without a bound) and OSError when it cannot be opened."""
    limit = MAX_FILE_BYTES if limit is None else limit
    # O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused once open)
    with os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC), "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise FileTooBig("not a regular file (a device, FIFO or socket; ttsd reads only regular files)")
        if info.st_size > limit:
            raise FileTooBig(f"{info.st_size} bytes: larger than the {limit >> 20} MiB ttsd reads")
        data = handle.read(limit + 1)  # the file may grow while it is read
    if len(data) > limit:
        raise FileTooBig(f"larger than the {limit >> 20} MiB ttsd reads")
    return data


def read_text_file(path: Path | str, limit: int | None = None) -> str:
    """`read_bounded` decoded as UTF-8; UnicodeDecodeError for other bytes."""
    return read_bounded(path, limit).decode("utf-8")


def read_problem_text(path: Path) -> str:
    """The text of a file of a problem (`read_text_file`), or ProblemFileError naming it."""
    try:
        return read_text_file(path)
    except UnicodeDecodeError as error:
        raise ProblemFileError(path, [("", f"not UTF-8 text ({error.reason} at byte {error.start})")]) from None
    except FileTooBig as error:
        raise ProblemFileError(path, [("", str(error))]) from None
    except OSError as error:
        raise ProblemFileError(path, [("", f"cannot read: {error.strerror or error}")]) from None


def json_object(text: str, path: Path | str) -> dict:
    """The JSON object `text` holds, or ProblemFileError naming `path` (line and column, or a
    nesting deeper than MAX_NESTING, checked without recursion before the parser sees the text)."""
    if nesting_depth(text) > MAX_NESTING:
        raise ProblemFileError(path, [("", f"nested more than {MAX_NESTING} levels deep (arrays and objects)")])
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ProblemFileError(path, [("", f"invalid JSON at line {error.lineno} column {error.colno}: {error.msg}")]) from None
    if not isinstance(data, dict):
        raise ProblemFileError(path, [("", f"expected a JSON object at the top level, got {type(data).__name__}")])
    return data


def parse_problem(text: str, path: Path | str = "<problem>") -> Problem:
    """Validate the text of one problem file; `path` only names it in errors."""
    data = json_object(text, path)
    try:
        return Problem.model_validate(data)
    except ValidationError as error:
        raise ProblemFileError(path, validation_faults(error)) from None


def load_problem(path: Path | str) -> Problem:
    """Read and validate one problem file. Raises ProblemFileError, never anything else for bad files."""
    path = Path(path)
    if not path.exists():
        raise ProblemFileError(path, [("", "no such file")])
    if path.is_dir():
        from ttsd.problems.folders import is_problem_folder, load_problem_folder

        if is_problem_folder(path):
            return load_problem_folder(path)
        raise ProblemFileError(path, [("", "is a directory, expected a problem .json file or a problem folder (with problem.toml)")])
    return parse_problem(read_problem_text(path), path)


def problem_files(path: Path | str) -> list[Path]:
    """The problem files at `path`: the file (or problem folder) itself, or every `*.json` and
    problem folder in a directory, sorted."""
    from ttsd.problems.folders import is_problem_folder

    path = Path(path)
    if is_problem_folder(path):
        return [path]
    if path.is_dir():
        return sorted(p for p in path.iterdir() if (p.is_file() and p.suffix == ".json") or is_problem_folder(p))
    return [path]


def load_problems(path_or_dir: Path | str) -> list[Problem]:
    """Load one file or every `*.json` in a directory; all faults of all files in one error.

    Ids must be unique across the files loaded.
    """
    files = problem_files(path_or_dir)
    if not files:
        raise ProblemFileError(path_or_dir, [("", "no *.json problem files in this directory")])
    problems: list[Problem] = []
    errors: list[ProblemFileError] = []
    first_file_of_id: dict[str, Path] = {}
    for file in files:
        try:
            problem = load_problem(file)
        except ProblemFileError as error:
            errors.append(error)
            continue
        if problem.id in first_file_of_id:
            message = f"'{problem.id}' is also the id of {first_file_of_id[problem.id]}"
            errors.append(ProblemFileError(file, [("id", message)]))
            continue
        first_file_of_id[problem.id] = file
        problems.append(problem)
    if errors:
        raise errors[0] if len(errors) == 1 else ProblemFilesError(path_or_dir, errors)
    return problems


def default_search_dirs() -> list[Path]:
    """Where a bare id is looked up: ./problems (recursively), then the bundled examples."""
    return [Path.cwd() / "problems", EXAMPLES_DIR]


def find_problem(id_or_file: str | Path, search_dirs: Sequence[Path] | None = None) -> Problem:
    """An existing file path, else a problem id: the first `<id>.json` under the search dirs
    (searched recursively, hidden folders skipped), else the first file whose `id` matches."""
    from ttsd.problems.folders import is_problem_folder

    candidate = Path(id_or_file)
    if candidate.is_file() or is_problem_folder(candidate) or candidate.suffix == ".json" or len(candidate.parts) > 1:
        return load_problem(candidate)
    problem_id = str(id_or_file)
    dirs = [Path(d) for d in (search_dirs if search_dirs is not None else default_search_dirs())]
    for directory in dirs:
        for file in _json_files_under(directory):
            if file.stem == problem_id:
                return load_problem(file)
        for folder in _problem_folders_under(directory):
            if folder.name == problem_id:
                return load_problem(folder)
    for directory in dirs:
        for file in _json_files_under(directory):
            try:
                text = read_text_file(file)
                if nesting_depth(text) <= MAX_NESTING and json.loads(text).get("id") == problem_id:
                    return load_problem(file)
            except (OSError, ValueError, AttributeError):  # FileTooBig and UnicodeDecodeError are ValueErrors
                continue
    searched = ", ".join(str(d) for d in dirs) or "(no directories)"
    raise ProblemFileError(problem_id, [("", f"no problem file with this id in {searched}")])


def _json_files_under(directory: Path) -> list[Path]:
    """Problem files under `directory` (a problem folder's own problem.json is not one)."""
    if not directory.is_dir():
        return []
    return sorted(
        p for p in directory.rglob("*.json")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(directory).parts)
        and not (p.name == "problem.json" and p.parent != directory)
    )


def _problem_folders_under(directory: Path) -> list[Path]:
    from ttsd.problems.folders import METADATA_FILES

    if not directory.is_dir():
        return []
    found = {p.parent for name in METADATA_FILES for p in directory.rglob(name)}
    return sorted(p for p in found if p != directory and not any(part.startswith(".") for part in p.relative_to(directory).parts))


def save_problem(problem: Problem, out_dir: Path | str) -> Path:
    """Write `<out_dir>/<id>.json` (pretty, UTF-8, defaults left out for readability) and return its path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{problem.id}.json"
    data = problem.model_dump(mode="json", exclude_none=True)
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)  # a crash leaves the old file or the new one, never half of one
    return path

"""Seeded fuzzing of what ttsd reads from users: mutants of the bundled problem files and of real
LiveCodeBench rows. Every mutant either loads (it is still a valid problem) or is refused with
ProblemFileError / exit 2 naming the file: never another exception, a traceback, or a half import.

Sized for CI (seconds): 300 problem mutants through `load_problem`, 40 through `ttsd problems
validate` and 30 through `ttsd check` (in-process, typer's CliRunner), 120 LCB mutants through
`import_lcb` and 20 through `ttsd problems import lcb`, and 2 of each kind in subprocesses.
"""

from __future__ import annotations

import gzip
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import REPO, SHARED
from ttsd.cli import app
from ttsd.importers.lcb import import_lcb
from ttsd.problems import ProblemFileError, load_problem

EXAMPLES = REPO / "problems" / "examples"
LCB_V6 = SHARED / "data" / "lcb" / "code_generation_lite_v6_public.jsonl"
SEED = 24
runner = CliRunner()

# Values that once broke something, or that sit at a limit.
NASTY_VALUES = [
    None, True, -1, 0, 1e300, float("inf"), 2**63, 10**30, 30 * 86400, "", "\ud800", "x\udfff", "\x00",
    "[" * 5000, [[[[[]]]]], {"a": {"b": {}}}, "a" * 300, "../../etc/passwd", "é" * 50, [], {},
]


NEST = "__nested_%d__"  # a placeholder `_dumps` replaces with arrays nested that deep (json.dumps itself recurses)


def _dumps(data: object, ensure_ascii: bool = True) -> str:
    text = json.dumps(data, ensure_ascii=ensure_ascii)
    for depth in (300, 5000):
        text = text.replace(json.dumps(NEST % depth), "[" * depth + "1" + "]" * depth)
    return text


def _paths(data: object, prefix: tuple = ()) -> list[tuple]:
    """Every path (keys and indexes) into a JSON value."""
    found = [prefix]
    if isinstance(data, dict):
        for key, value in data.items():
            found += _paths(value, prefix + (key,))
    elif isinstance(data, list):
        for index, value in enumerate(data[:4]):
            found += _paths(value, prefix + (index,))
    return found


def _replace(data: object, path: tuple, value: object) -> object:
    if not path:
        return value
    head, rest = path[0], path[1:]
    copy = dict(data) if isinstance(data, dict) else list(data)
    copy[head] = _replace(copy[head], rest, value)
    return copy


def _mutate_value(data: dict, rng: random.Random) -> object:
    path = rng.choice(_paths(data))
    roll = rng.random()
    if roll < 0.15 and path:  # drop the field or element
        parent = _replace(data, path[:-1], None)  # placeholder to copy the parents
        container = _get(data, path[:-1])
        container = dict(container) if isinstance(container, dict) else list(container)
        del container[path[-1]]
        return _replace(parent, path[:-1], container)
    if roll < 0.25:
        return _replace(data, path, NEST % rng.choice([300, 5000]))
    return _replace(data, path, rng.choice(NASTY_VALUES))


def _get(data: object, path: tuple) -> object:
    for part in path:
        data = data[part]
    return data


def _mutate_text(text: bytes, rng: random.Random) -> bytes:
    roll = rng.random()
    at = rng.randrange(len(text) + 1)
    if roll < 0.3:
        return text[:at]  # cut short
    if roll < 0.5:
        return text[:at] + bytes([rng.randrange(256)]) + text[at + 1 :]  # one byte changed
    if roll < 0.65:
        return text[:at] + b"\xff\xfe" + text[at:]  # not UTF-8
    if roll < 0.8:
        return text[:at] + b"[" * 3000 + text[at:]
    return text[:at] + b'\\ud800' + text[at:]  # a lone surrogate escape (inside a string, or bad JSON)


def _problem_mutant(rng: random.Random, sources: list[bytes]) -> bytes:
    source = rng.choice(sources)
    if rng.random() < 0.5:
        mutated = _mutate_value(json.loads(source), rng)
        return _dumps(mutated, ensure_ascii=rng.random() < 0.5).encode("utf-8", "surrogatepass")
    return _mutate_text(source, rng)


def _assert_loads_or_is_refused_naming(path: Path) -> None:
    try:
        load_problem(path)
    except ProblemFileError as error:
        assert str(path) in str(error), str(error)[:500]


def test_problem_file_mutants_load_or_are_refused_naming_the_file(tmp_path):
    rng = random.Random(SEED)
    sources = [path.read_bytes() for path in sorted(EXAMPLES.glob("*.json"))]
    refused = 0
    for index in range(300):
        path = tmp_path / f"mutant-{index}.json"
        path.write_bytes(_problem_mutant(rng, sources))
        try:
            load_problem(path)
        except ProblemFileError as error:
            refused += 1
            assert str(path) in str(error), str(error)[:500]
    assert refused > 200, "the mutants must mostly be bad input, or the test tests little"


def test_problem_mutants_through_the_cli_exit_0_or_2_without_a_traceback(tmp_path):
    rng = random.Random(SEED + 1)
    sources = [path.read_bytes() for path in sorted(EXAMPLES.glob("*.json"))]
    solution = EXAMPLES / "solutions" / "sum-two-numbers.py"
    for index in range(70):
        path = tmp_path / f"mutant-{index}.json"
        path.write_bytes(_problem_mutant(rng, sources))
        command = ["problems", "validate", str(path)] if index < 40 else ["check", str(path), str(solution)]
        result = runner.invoke(app, command)
        assert result.exception is None or isinstance(result.exception, SystemExit), (command, repr(result.exception))
        if command[0] == "check":
            assert result.exit_code in (0, 1, 2), result.output  # a still-valid problem is judged
        else:
            assert result.exit_code in (0, 2), result.output
        if result.exit_code == 2:
            assert str(path) in result.stderr, result.stderr[:500]


def _lcb_rows(count: int) -> list[dict]:
    rows = []
    with LCB_V6.open(encoding="utf-8") as lines:
        for line in lines:
            rows.append(json.loads(line))
            if len(rows) == count:
                break
    return rows


def _lcb_mutant(rng: random.Random, rows: list[dict]) -> bytes:
    """A .jsonl of two good rows and one mutant (in the middle)."""
    good = [json.dumps(row).encode() + b"\n" for row in rng.sample(rows, 2)]
    row = rng.choice(rows)
    roll = rng.random()
    if roll < 0.3:  # a test field's inner JSON
        field = rng.choice(["public_test_cases", "metadata"])
        inner = json.loads(row[field]) if row[field].strip() else []
        mutated_inner = _mutate_value({"v": inner}, rng)
        text = _dumps(mutated_inner.get("v") if isinstance(mutated_inner, dict) else mutated_inner)
        bad = json.dumps({**row, field: text}).encode() + b"\n"
    elif roll < 0.65:
        bad = _dumps(_mutate_value(row, rng)).encode() + b"\n"
    else:
        bad = _mutate_text(json.dumps(row).encode(), rng) + b"\n"
    return good[0] + bad + good[1]


def _assert_lcb_import_or_refusal(source: Path, out: Path) -> None:
    try:
        import_lcb(source, out)
    except ProblemFileError as error:
        assert str(source) in str(error), str(error)[:500]
        assert not out.exists() or not list(out.iterdir()), "a refused import wrote files"


def test_lcb_row_mutants_import_or_are_refused_naming_file_and_line(tmp_path):
    rng = random.Random(SEED + 2)
    rows = _lcb_rows(8)
    for index in range(120):
        source = tmp_path / f"mutant-{index}.jsonl"
        data = _lcb_mutant(rng, rows)
        if index % 10 == 9:  # a gzip file, whole or cut short, or not gzip at all
            source = source.with_name(source.name + ".gz")
            packed = gzip.compress(data)
            data = rng.choice([packed, packed[: rng.randrange(1, len(packed))], data])
        source.write_bytes(data)
        _assert_lcb_import_or_refusal(source, tmp_path / f"out-{index}")


def test_lcb_mutants_through_the_cli_exit_0_or_2_without_a_traceback(tmp_path):
    rng = random.Random(SEED + 3)
    rows = _lcb_rows(8)
    for index in range(20):
        source = tmp_path / f"mutant-{index}.jsonl"
        source.write_bytes(_lcb_mutant(rng, rows))
        out = tmp_path / f"out-{index}"
        result = runner.invoke(app, ["problems", "import", "lcb", str(source), "--out", str(out)])
        assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
        assert result.exit_code in (0, 2), result.output
        if result.exit_code == 2:
            assert str(source) in result.stderr and (not out.exists() or not list(out.iterdir()))


@pytest.mark.timeout(300)
def test_mutants_in_subprocesses_exit_2_naming_the_file_without_a_traceback(tmp_path):
    rng = random.Random(SEED + 4)
    sources = [path.read_bytes() for path in sorted(EXAMPLES.glob("*.json"))]
    rows = _lcb_rows(8)
    commands = []
    for index in range(2):
        problem = tmp_path / f"mutant-{index}.json"
        problem.write_bytes(_mutate_text(rng.choice(sources), rng) + b"[" * 100000)  # never valid
        commands.append((problem, ["problems", "validate", str(problem)]))
        source = tmp_path / f"mutant-{index}.jsonl"
        source.write_bytes(_lcb_mutant(rng, rows) + b"\xff{\n")  # a last line that is never valid
        commands.append((source, ["problems", "import", "lcb", str(source), "--out", str(tmp_path / f"out-{index}")]))
    for path, command in commands:
        done = subprocess.run([sys.executable, "-m", "ttsd", *command], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
        assert str(path) in " ".join(done.stderr.split()), done.stderr[-2000:]

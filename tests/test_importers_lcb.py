"""The LiveCodeBench importer (ttsd/importers/lcb.py) and `ttsd problems import lcb`."""

from __future__ import annotations

import base64
import json
import os
import pickle
import zlib
from datetime import date
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import SHARED
from ttsd.cli import app
from ttsd.importers.lcb import (
    LcbDecodeError,
    decode_lcb_tests,
    encode_lcb_private_tests,
    import_lcb,
    safe_unpickle,
    split_visible,
)
from ttsd.problems import Problem, ProblemFileError, TestCase, load_problem, load_problems

LCB_V6 = SHARED / "data" / "lcb" / "code_generation_lite_v6_public.jsonl"
runner = CliRunner()


def lcb_line(question_id: str, *, functional: bool = False, private: str = "", date_: str = "2025-03-01T00:00:00", public=None) -> dict:
    if public is None:
        public = (
            [{"input": "[1, 2]\n3", "output": "6", "testtype": "functional"}]
            if functional
            else [{"input": "1 2\n", "output": "3\n", "testtype": "stdin"}]
        )
    return {
        "question_title": f"Title {question_id}",
        "question_content": f"Statement of {question_id}.",
        "platform": "leetcode" if functional else "atcoder",
        "question_id": question_id,
        "contest_id": "c1",
        "contest_date": date_,
        "starter_code": "class Solution:\n    def total(self, xs: List[int], k: int) -> int:\n        " if functional else "",
        "difficulty": "hard",
        "public_test_cases": json.dumps(public),
        "private_test_cases": private,
        "metadata": json.dumps({"func_name": "total"} if functional else {}),
    }


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


PRIVATE = [{"input": f"{i} {i}\n", "output": f"{2 * i}\n", "testtype": "stdin"} for i in range(10)]


def test_encoded_private_tests_decode_to_hidden_tests(tmp_path):
    blob = encode_lcb_private_tests(PRIVATE)
    # the official encoding, built by hand here: base64(zlib(pickle(json string)))
    assert blob == base64.b64encode(zlib.compress(pickle.dumps(json.dumps(PRIVATE)))).decode()
    assert [t.output for t in decode_lcb_tests(blob)] == [t["output"] for t in PRIVATE]
    assert [t.input for t in decode_lcb_tests(json.dumps(PRIVATE))] == [t["input"] for t in PRIVATE]
    assert decode_lcb_tests("") == []

    source = write_jsonl(tmp_path / "lcb.jsonl", [lcb_line("abc1_a", private=blob), lcb_line("3001", functional=True)])
    report = import_lcb(source, tmp_path / "out")
    assert [p.name for p in report.written] == ["abc1_a.json", "3001.json"]
    stdin_problem = load_problem(tmp_path / "out" / "abc1_a.json")
    assert stdin_problem.kind == "stdin" and stdin_problem.entry_point is None
    assert [t.input for t in stdin_problem.tests] == ["1 2\n"]
    assert [t.output for t in stdin_problem.hidden_tests] == [t["output"] for t in PRIVATE]
    assert (stdin_problem.title, stdin_problem.difficulty, stdin_problem.source) == ("Title abc1_a", "hard", "lcb:atcoder")
    assert stdin_problem.contest_date.date() == date(2025, 3, 1)
    functional = load_problem(tmp_path / "out" / "3001.json")
    assert (functional.kind, functional.entry_point) == ("functional", "total")
    assert functional.starter_code.startswith("class Solution:")
    assert functional.tests == [TestCase(input="[1, 2]\n3", output="6")] and functional.hidden_tests == []
    assert (report.visible_tests, report.hidden_tests) == (2, 10)


def test_visible_fraction_moves_a_seeded_random_half_of_the_hidden_tests(tmp_path):
    source = write_jsonl(tmp_path / "lcb.jsonl", [lcb_line("abc1_a", private=encode_lcb_private_tests(PRIVATE))])

    def split(seed: int, fraction: float = 0.5) -> Problem:
        out = tmp_path / f"out-{seed}-{fraction}"
        import_lcb(source, out, visible_fraction=fraction, seed=seed)
        return load_problem(out / "abc1_a.json")

    first, again, other = split(1), split(1), split(2)
    assert len(first.tests) == 1 + 5 and len(first.hidden_tests) == 5
    assert first.tests[0].input == "1 2\n", "public tests stay first"
    assert first == again, "the same seed gives the same split"
    assert {t.input for t in first.tests} != {t.input for t in other.tests}, "another seed gives another split"
    all_private = {t["input"] for t in PRIVATE}
    assert {t.input for t in first.tests[1:]} | {t.input for t in first.hidden_tests} == all_private
    assert not {t.input for t in first.tests[1:]} & {t.input for t in first.hidden_tests}
    assert len(split(1, 1.0).hidden_tests) == 0 and len(split(1, 0.0).hidden_tests) == 10


def test_split_visible_rounds_half_up_and_rejects_bad_fractions():
    import random

    tests = [TestCase(input=str(i)) for i in range(3)]
    visible, hidden = split_visible([], tests, 0.5, random.Random(0))
    assert (len(visible), len(hidden)) == (2, 1)  # 1.5 rounds to 2
    with pytest.raises(ValueError, match="visible_fraction"):
        split_visible([], tests, 1.5, random.Random(0))


class _RunsShellCommand:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_rejected_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    evil = base64.b64encode(zlib.compress(pickle.dumps(_RunsShellCommand(marker)))).decode()
    with pytest.raises(LcbDecodeError, match="refused to load global (posix|os).system"):
        decode_lcb_tests(evil)
    source = write_jsonl(tmp_path / "lcb.jsonl", [lcb_line("ok_1"), lcb_line("evil_1", private=evil)])
    with pytest.raises(ProblemFileError) as caught:
        import_lcb(source, tmp_path / "out")
    assert str(caught.value).startswith(f"{source}:2: private_test_cases: bad pickle: refused to load global")
    assert not marker.exists(), "the pickle's payload ran"
    assert not (tmp_path / "out").exists(), "nothing is written when a line is bad"
    # builtins other than str/list/dict are refused too (eval would run code)
    eval_pickle = pickle.dumps(eval)
    with pytest.raises(pickle.UnpicklingError, match="builtins.eval"):
        safe_unpickle(eval_pickle)
    assert safe_unpickle(pickle.dumps({"a": ["b"]})) == {"a": ["b"]}


def test_undecodable_private_tests_give_clear_errors():
    with pytest.raises(LcbDecodeError, match="neither JSON nor base64"):
        decode_lcb_tests("not json, not base64!")
    with pytest.raises(LcbDecodeError, match="not zlib data"):
        decode_lcb_tests(base64.b64encode(b"plain bytes").decode())
    with pytest.raises(LcbDecodeError, match="exceed 1000 bytes"):
        decode_lcb_tests(base64.b64encode(zlib.compress(b"x" * 100_000)).decode(), limit=1000)
    truncated = base64.b64encode(zlib.compress(pickle.dumps(json.dumps(PRIVATE)))[:-10]).decode()
    with pytest.raises(LcbDecodeError, match="incomplete or truncated"):
        decode_lcb_tests(truncated)
    with pytest.raises(LcbDecodeError, match=r"\[0\]\.testtype"):
        decode_lcb_tests(json.dumps([{"input": "1", "output": "2", "testtype": "interactive"}]))


def test_date_window_is_inclusive_and_bad_lines_name_file_and_line(tmp_path):
    records = [lcb_line(f"q{day}", date_=f"2025-02-{day:02d}T12:00:00") for day in (1, 2, 3, 4)]
    source = write_jsonl(tmp_path / "lcb.jsonl", records)
    report = import_lcb(source, tmp_path / "out", start_date=date(2025, 2, 2), end_date=date(2025, 2, 3))
    assert sorted(p.name for p in report.written) == ["q2.json", "q3.json"]
    assert (report.records, report.outside_window) == (4, 2)

    broken = dict(lcb_line("q9"))
    del broken["question_content"]
    source = write_jsonl(tmp_path / "bad.jsonl", [lcb_line("q8"), broken])
    with pytest.raises(ProblemFileError, match=r"bad.jsonl:2: question_content: field required"):
        import_lcb(source, tmp_path / "out2")
    functional_without_name = lcb_line("q7", functional=True)
    functional_without_name["metadata"] = "{}"
    source = write_jsonl(tmp_path / "nofunc.jsonl", [functional_without_name])
    with pytest.raises(ProblemFileError, match=r"nofunc.jsonl:1: metadata.func_name: required"):
        import_lcb(source, tmp_path / "out3")
    with pytest.raises(ProblemFileError, match="no such file"):
        import_lcb(tmp_path / "absent.jsonl", tmp_path / "out4")


@pytest.mark.skipif(not LCB_V6.exists(), reason="needs the shared LiveCodeBench data")
def test_import_real_livecodebench_v6(tmp_path):
    report = import_lcb(LCB_V6, tmp_path / "all", visible_fraction=0.5, seed=0)
    assert len(report.written) == 175
    problems = load_problems(tmp_path / "all")
    assert {p.kind for p in problems} == {"stdin", "functional"}
    assert all(p.entry_point for p in problems if p.kind == "functional")
    window = import_lcb(LCB_V6, tmp_path / "window", start_date=date(2025, 2, 1), end_date=date(2025, 5, 1))
    assert len(window.written) == 131 and window.outside_window == 44


def test_cli_import_lcb(tmp_path):
    source = write_jsonl(tmp_path / "lcb.jsonl", [lcb_line("abc1_a", private=encode_lcb_private_tests(PRIVATE))])
    out = tmp_path / "out"
    args = ["problems", "import", "lcb", str(source), "--out", str(out), "--visible-fraction", "0.5", "--seed", "3"]
    result = runner.invoke(app, args + ["--start-date", "2025-01-01", "--end-date", "2025-12-31"])
    assert result.exit_code == 0, result.output
    assert "wrote 1 problems" in result.stdout
    assert len(load_problem(out / "abc1_a.json").hidden_tests) == 5

    result = runner.invoke(app, args + ["--start-date", "2025-12-01", "--end-date", "2025-01-01"])
    assert result.exit_code == 2 and "is after --end-date" in result.stderr
    result = runner.invoke(app, ["problems", "import", "lcb", str(source), "--out", str(out), "--visible-fraction", "2"])
    assert result.exit_code == 2

    evil = write_jsonl(tmp_path / "evil.jsonl", [lcb_line("x", private=base64.b64encode(zlib.compress(pickle.dumps(eval))).decode())])
    result = runner.invoke(app, ["problems", "import", "lcb", str(evil), "--out", str(tmp_path / "evil-out")])
    assert result.exit_code == 2 and "refused to load global builtins.eval" in result.stderr


def _gzip(data: bytes) -> bytes:
    import gzip

    return gzip.compress(data)


def _bad_lcb_files(tmp_path: Path) -> list[tuple[Path, str, str]]:
    """(file, where the message must point, what it must say): each once a traceback or exit 1 (#24)."""
    good = (json.dumps(lcb_line("good_a")) + "\n").encode()
    deep = lcb_line("deep_a")
    deep["public_test_cases"] = "[" * 6000 + "]" * 6000
    surrogate = json.dumps(lcb_line("sur_a", public=[{"input": "1 \ud800\n", "output": "3\n", "testtype": "stdin"}]))
    files = {
        "utf8.jsonl": (good + b'{"question_id": "\xff"}\n', ":2", "not UTF-8"),
        "long.jsonl": (good + (json.dumps(lcb_line("q" * 300)) + "\n").encode(), ":2", "id"),
        "deep.jsonl": (good + (json.dumps(deep) + "\n").encode(), ":2", "nested more than 200 levels deep"),
        "surrogate.jsonl": (good + (surrogate + "\n").encode(), ":2", "lone surrogate"),
        "notgzip.jsonl.gz": (good, "notgzip.jsonl.gz", "not gzip data"),
        "cut.jsonl.gz": (_gzip(good * 50)[:-30], "cut.jsonl.gz", "truncated or corrupt"),
    }
    written = []
    for name, (data, where, says) in files.items():
        (tmp_path / name).write_bytes(data)
        written.append((tmp_path / name, where, says))
    return written


def test_bad_lcb_files_exit_2_naming_file_and_line_and_write_nothing(tmp_path):
    for source, where, says in _bad_lcb_files(tmp_path):
        out = tmp_path / f"out-{source.name}"
        result = runner.invoke(app, ["problems", "import", "lcb", str(source), "--out", str(out)])
        assert result.exit_code == 2, (source.name, result.output, result.exception)
        assert str(source) in result.stderr and where in result.stderr and says in result.stderr, (source.name, result.stderr)
        assert "Traceback" not in result.output and "Aborted" not in result.output
        assert not out.exists() or not list(out.iterdir()), f"{source.name}: a half import was written"

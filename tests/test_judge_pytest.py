"""pytest problems (ttsd/judge/pytest_suite.py and the harness's pytest mode): collection against a
stand-in, one verdict per test, limits, pytest's report as feedback, cheats, and the bad-input
suite of tests/test_sandbox_local.py run as the candidate and as the test file, in both sandboxes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ttsd.sandbox.supervisor import wall_limit_s

from ttsd.judge import HIDDEN_FAILURE_FEEDBACK, Judge, Verdict
from ttsd.judge.feedback import FIELD_MAX_LINES, clip_field_end
from ttsd.judge.pytest_suite import (
    PytestCollection,
    PytestCollectionError,
    classify_tests,
    collect,
    own_frames,
    prepare_pytest,
    pytest_job,
)
from ttsd.problems.model import Problem
from ttsd.sandbox import make_sandbox
from ttsd.sandbox.base import ExecResult
from tests.test_sandbox_local import BAD_INPUT, assert_nothing_left, ctx  # noqa: F401  (ctx is a fixture)

pytestmark = pytest.mark.timeout(300)

VISIBLE = '''\
import pytest

from solution import add


def test_small():
    assert add(2, 3) == 5


def test_negative():
    assert add(-2, -3) == -5


@pytest.mark.parametrize("a", [1, 2])
def test_zero(a):
    assert add(a, 0) == a
'''
HIDDEN = "from solution import add\n\n\ndef test_big():\n    assert add(10**9, 1) == 10**9 + 1\n"
RIGHT = "def add(a, b):\n    return a + b\n"


def problem(test_file: str = VISIBLE, hidden: str | None = HIDDEN, **fields) -> Problem:
    return Problem(id="p", statement="add two numbers", kind="pytest", test_file=test_file, hidden_test_file=hidden,
                   time_limit_s=fields.pop("time_limit_s", 2.0), **fields)


ADD = problem()


@pytest.fixture(scope="module")
def judge():
    sandbox = make_sandbox("local")
    with Judge(sandbox, max_workers=2) as judge:
        yield judge
    sandbox.close()


def test_collection_finds_every_test_function_and_case_in_order(judge):
    collection = collect(judge.sandbox, ADD)
    assert collection.visible == [
        "test_visible.py::test_small", "test_visible.py::test_negative",
        "test_visible.py::test_zero[1]", "test_visible.py::test_zero[2]",
    ]
    assert collection.hidden == ["test_hidden.py::test_big"]


@pytest.mark.parametrize(
    "test_file, expected",
    [
        ("import numpy_is_not_here\n\ndef test_x():\n    pass\n", "No module named 'numpy_is_not_here'"),
        ("from solution import f\nraise RuntimeError('broken at import')\n\ndef test_x():\n    pass\n", "broken at import"),
        ("def helper():\n    pass\n\nclass TestNothing:\n    pass\n", "collects no test"),
    ],
)
def test_a_test_file_that_cannot_be_collected_is_the_problems_fault(judge, test_file, expected):
    with pytest.raises(PytestCollectionError) as caught:
        collect(judge.sandbox, problem(test_file=test_file, hidden=None))
    assert caught.value.field == "test_file"
    assert expected in caught.value.message
    with pytest.raises(PytestCollectionError):
        collect(judge.sandbox, problem(hidden=test_file))


def test_accepted_and_one_verdict_per_test(judge):
    good = judge.judge_code(ADD, RIGHT)
    assert good.verdict == Verdict.accepted and (good.tests_passed, good.tests_total) == (5, 5), good
    assert [(r.index, r.hidden, r.verdict) for r in good.test_results] == [
        (0, False, Verdict.accepted), (1, False, Verdict.accepted), (2, False, Verdict.accepted),
        (3, False, Verdict.accepted), (0, True, Verdict.accepted),
    ]


def test_a_failed_assertion_shows_pytests_report_and_hidden_tests_do_not_run(judge):
    wrong = judge.judge_code(ADD, "def add(a, b):\n    return a + b + (a < 0)\n")
    assert wrong.verdict == Verdict.wrong_answer and wrong.tests_passed == 3, wrong
    assert [r.hidden for r in wrong.test_results] == [False] * 4
    assert wrong.feedback == (
        "Test Failed (1 of 4 visible tests failed)\n\n"
        "Test: test_visible.py::test_negative\n"
        "pytest report:\n"
        "test_visible.py:11: in test_negative\n"
        "    assert add(-2, -3) == -5\n"
        "E   assert -4 == -5\n"
        "E    +  where -4 = add(-2, -3)"
    )


def test_a_hidden_failure_gives_one_sentence(judge):
    hidden_only = judge.judge_code(ADD, "def add(a, b):\n    return a + b + (a > 100)\n")
    assert hidden_only.verdict == Verdict.wrong_answer and hidden_only.tests_passed == 4
    assert hidden_only.feedback == HIDDEN_FAILURE_FEEDBACK


def test_an_exception_in_the_program_names_its_line_and_what_it_printed(judge):
    broken = judge.judge_code(ADD, "def add(a, b):\n    print('adding', a)\n    return b.x\n")
    assert broken.verdict == Verdict.runtime_error and broken.tests_passed == 0
    assert "Runtime Error (4 of 4 visible tests failed)" in broken.feedback
    assert "solution.py:3: in add\n    return b.x\nE   AttributeError: 'int' object has no attribute 'x'" in broken.feedback
    assert "Printed Output:\nadding 2" in broken.feedback


def test_a_program_that_cannot_be_imported_is_one_load_error(judge):
    syntax = judge.judge_code(ADD, "def add(a, b)\n    return a + b\n")
    assert syntax.verdict == Verdict.runtime_error and len(syntax.test_results) == 1
    assert syntax.feedback.startswith("Runtime Error\n\nThe tests could not import the program\npytest report:\n")
    assert "SyntaxError: expected ':'" in syntax.feedback
    assert "dist-packages" not in syntax.feedback and "importlib" not in syntax.feedback  # pytest's own frames are dropped
    missing = judge.judge_code(ADD, "def plus(a, b):\n    return a + b\n")
    assert missing.verdict == Verdict.runtime_error and "cannot import name 'add'" in missing.feedback


def test_each_test_has_its_own_time_limit(judge):
    slow_on_negatives = "import time\ndef add(a, b):\n    if a < 0:\n        time.sleep(60)\n    return a + b\n"
    started = time.monotonic()
    judged = judge.judge_code(problem(time_limit_s=1.0), slow_on_negatives)
    assert time.monotonic() - started < 30  # a correctness bound: the 60 s sleep was cut at 1 s
    assert judged.verdict == Verdict.time_limit, judged
    assert [r.verdict for r in judged.test_results] == [Verdict.accepted, Verdict.time_limit, Verdict.accepted, Verdict.accepted]
    assert "Test: test_visible.py::test_negative\nThe test did not finish within 1 s." in judged.feedback


def test_a_test_that_blocks_the_alarm_is_stopped_by_the_suites_limit():
    sandbox = make_sandbox("local")
    with Judge(sandbox, max_workers=1, suite_time_limit_s=4.0) as judge:
        judged = judge.judge_code(problem(time_limit_s=1.0), "import signal\nsignal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})\n"
                                  "def add(a, b):\n    while True:\n        pass\n")
    assert judged.verdict == Verdict.time_limit and judged.test_results[0].verdict == Verdict.time_limit, judged
    assert len(judged.test_results) == 1  # the process was killed inside the first test


def test_memory_and_output_limits(judge):
    memory = judge.judge_code(problem(memory_limit_mb=256), "def add(a, b):\n    x = bytearray(2 << 30)\n    return a + b\n")
    assert memory.verdict == Verdict.memory_limit, memory
    assert "The program needed more than 256 MB." in memory.feedback
    flood = judge.judge_code(ADD, "import sys\ndef add(a, b):\n    while True:\n        sys.stdout.write('x' * 65536)\n")
    assert flood.verdict == Verdict.output_limit, flood
    assert len(flood.test_results) == 1


def test_the_module_name_is_the_problems(judge):
    named = problem(test_file=VISIBLE.replace("from solution", "from adder"), hidden=None, module="adder")
    assert judge.judge_code(named, RIGHT).verdict == Verdict.accepted
    assert judge.judge_program(named, f"```python\n{RIGHT}```").verdict == Verdict.accepted


@pytest.mark.parametrize(
    "cheat",
    [
        "import sys\nsys.exit(0)\n",
        "import os\nos._exit(0)\n",
        "import pytest\npytest.skip('nothing to see', allow_module_level=True)\n",
        "import pytest\ndef add(a, b):\n    pytest.skip('skipped')\n",
        "import pytest\ndef add(a, b):\n    pytest.xfail('expected')\n",
        # deselect every test from inside: the judge's ids come from the stand-in collection
        "import gc, _pytest.config\nclass Deselect:\n    def pytest_collection_modifyitems(self, items):\n        items.clear()\n"
        "for o in gc.get_objects():\n    if isinstance(o, _pytest.config.Config):\n        o.pluginmanager.register(Deselect())\n"
        "def add(a, b):\n    return 0\n",
        # a fake report line: the nonce is unknown
        'print("\\n0 {\\"event\\": \\"result\\", \\"outcome\\": \\"passed\\"}")\ndef add(a, b):\n    return 0\n',
        "import atexit, os\natexit.register(lambda: os._exit(0))\ndef add(a, b):\n    raise SystemExit(0)\n",
    ],
)
def test_cheats_do_not_pass(judge, cheat):
    assert judge.judge_code(ADD, cheat).verdict != Verdict.accepted


def test_a_format_error_counts_every_collected_test(judge):
    judged = judge.judge(ADD, "no code here")
    assert judged.verdict == Verdict.format_error and judged.tests_total == 5


def test_classify_a_process_that_died_inside_a_test():
    """Raw reports in, runs out: the test the process ended in is charged with how it ended."""
    nonce = "N"
    stdout = (
        '\nN {"event": "collected", "tests": ["t.py::a", "t.py::b", "t.py::c"], "errors": []}\n'
        '\nN {"event": "start", "nodeid": "t.py::a"}\nhi from a\n'
        '\nN {"event": "result", "nodeid": "t.py::a", "outcome": "passed", "wall_s": 0.5}\n'
        '\nN {"event": "start", "nodeid": "t.py::b"}\nlast words\n'
    )
    prepared = prepare_pytest(PytestCollection(visible=["t.py::a", "t.py::b", "t.py::c"]))
    killed = ExecResult(stdout=stdout, exit_code=-9)
    runs = classify_tests(ADD, prepared, killed, nonce, per_test_limit_s=2.0)
    assert [(r.input, r.verdict) for r in runs] == [("t.py::a", Verdict.accepted), ("t.py::b", Verdict.runtime_error)]
    assert runs[0].stdout == "hi from a\n" and runs[0].wall_s == 0.5
    assert runs[1].stdout == "last words\n" and "signal" in runs[1].detail
    timed_out = classify_tests(ADD, prepared, ExecResult(stdout=stdout, timed_out=True), nonce, per_test_limit_s=2.0)
    assert timed_out[-1].verdict == Verdict.time_limit and not timed_out[-1].suite_cut
    clean_end = stdout + '\nN {"event": "result", "nodeid": "t.py::b", "outcome": "passed"}\n'
    missing = classify_tests(ADD, prepared, ExecResult(stdout=clean_end, exit_code=0), nonce, per_test_limit_s=2.0)
    assert [r.verdict for r in missing] == [Verdict.accepted, Verdict.accepted, Verdict.runtime_error]
    assert missing[2].detail == "the test did not run"


def test_own_frames_drops_pytests_machinery_and_the_end_of_a_long_report_is_kept():
    report = (
        "/usr/lib/python3/dist-packages/_pytest/python.py:618: in _importtestmodule\n    mod = import_path(...)\n"
        "<frozen importlib._bootstrap>:690: in _load_unlocked\n    ???\n"
        "test_visible.py:1: in <module>\n    from solution import add\nE   NameError: x"
    )
    assert own_frames(report) == "test_visible.py:1: in <module>\n    from solution import add\nE   NameError: x"
    long = "\n".join(f"line {i}" for i in range(20))
    clipped = clip_field_end(long)
    assert clipped.endswith("line 19") and clipped.split("\n")[1:] == [f"line {i}" for i in range(20 - FIELD_MAX_LINES, 20)]
    assert clip_field_end("short") == "short"


# -- hostile programs: the bad-input suite, as the candidate and as the test file ------------------


@pytest.fixture(scope="module", params=["local", pytest.param("docker", marks=pytest.mark.docker)])
def any_sandbox(request):
    sandbox = make_sandbox(request.param) if request.param == "local" else make_sandbox("docker", pool_size=0)
    yield sandbox
    sandbox.close()


@pytest.mark.parametrize("role", ["candidate", "test_file"])
@pytest.mark.parametrize("case", BAD_INPUT, ids=[c.name for c in BAD_INPUT])
def test_bad_input_is_contained_for_pytest_problems(any_sandbox, case, role, ctx):  # noqa: F811
    """What bounds a raw program bounds it under pytest too: its limits, no process or file left,
    no host file read, no connection (the ctx fixture checks the port); and it never passes."""
    module = f"main_{ctx.token}"  # in the command line, so leftovers can be found
    hostile = case.program(ctx)
    if role == "candidate":
        test_file, code = f"import {module}\n\n\ndef test_it():\n    assert {module}.DONE == 1\n", hostile
    else:
        test_file, code = hostile + "\n\ndef test_it():\n    assert False\n", "DONE = 1\n"
    target = Problem(id="p", statement="s", kind="pytest", test_file=test_file, module=module,
                     time_limit_s=case.time_limit_s, memory_limit_mb=512)
    job, nonce = pytest_job(target, "test_file", code, time_limit_s=case.time_limit_s + 1, per_test_limit_s=case.time_limit_s,
                            output_limit_bytes=1 << 20, collect_only=False)
    started = time.monotonic()
    result = any_sandbox.run(job)
    elapsed = time.monotonic() - started
    # a program that blocks the per-test alarm is stopped by the job's wall-clock backstop
    assert elapsed < wall_limit_s(job.time_limit_s) + 5, f"{case.name} took {elapsed:.1f}s"
    time.sleep(case.settle_s)
    assert_nothing_left(ctx.token)
    assert not Path("/tmp/escaped").exists()
    assert not list(Path("/tmp").glob("ttsd-job-*")), "a job's files were left in /tmp"
    for stream in (result.stdout, result.stderr):
        assert ctx.secret not in stream and "CONNECTED" not in stream and "READ " not in stream
        assert "wrote everything" not in stream and "allocated" not in stream
    if "fork failed after" in result.stdout:
        assert int(result.stdout.split("fork failed after")[1].split()[0]) < 200
    runs = classify_tests(target, prepare_pytest(PytestCollection(visible=["test_visible.py::test_it"])), result, nonce, case.time_limit_s)
    assert runs[0].verdict != Verdict.accepted, runs

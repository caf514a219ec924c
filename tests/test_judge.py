"""The Judge end to end: real runs in the sandboxes, the verdict rules, the pool (ttsd/judge/judge.py)."""

from __future__ import annotations

import json
import textwrap
import threading
from pathlib import Path

import pytest

from ttsd.judge import FEEDBACK_MAX_CHARS, HIDDEN_FAILURE_FEEDBACK, Judge, Verdict, harness
from ttsd.problems import load_problem
from ttsd.problems.model import Problem, TestCase

EXAMPLES = Path(__file__).resolve().parent.parent / "problems" / "examples"


def fence(code: str, language: str = "python") -> str:
    return f"```{language}\n{code}\n```"


# ---------------------------------------------------------------------------------------------
# End to end through the local sandbox
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_judge():
    from ttsd.sandbox import make_sandbox

    sandbox = make_sandbox("local")
    judge = Judge(sandbox, max_workers=2)
    yield judge
    judge.close()
    sandbox.close()


def stdin_problem(tests, hidden=(), **fields) -> Problem:
    return Problem(
        id="t",
        statement="test problem",
        kind="stdin",
        tests=[TestCase(input=i, output=o) for i, o in tests],
        hidden_tests=[TestCase(input=i, output=o) for i, o in hidden],
        **fields,
    )


def functional_problem(tests, entry_point="f", **fields) -> Problem:
    return Problem(
        id="t",
        statement="test problem",
        kind="functional",
        entry_point=entry_point,
        tests=[TestCase(input=i, output=o) for i, o in tests],
        **fields,
    )


SUM = stdin_problem([("1 2\n", "3\n"), ("0 5\n", "5\n")], hidden=[("10 20\n", "30\n")], time_limit_s=2)


def _examples() -> list[tuple[Path, Path]]:
    pairs = []
    for problem_file in sorted(EXAMPLES.glob("*.json")):
        for solution in sorted((EXAMPLES / "solutions").glob(problem_file.stem + "*.py")):
            if solution.stem.split(".")[0] == problem_file.stem:
                pairs.append((problem_file, solution))
    return pairs


def test_examples_reference_solutions_accepted_wrong_ones_rejected(local_judge):
    pairs = _examples()
    assert any(s.name.endswith(".wrong.py") for _, s in pairs) and len(pairs) >= 4
    by_problem: dict[Path, list[Path]] = {}
    for problem_file, solution in pairs:
        by_problem.setdefault(problem_file, []).append(solution)
    for problem_file, solutions in by_problem.items():
        problem = load_problem(problem_file)
        judgements = local_judge.judge_many(problem, [fence(s.read_text()) for s in solutions])
        for solution, judgement in zip(solutions, judgements):
            if solution.name.endswith(".wrong.py"):
                assert judgement.verdict != Verdict.accepted, solution
                assert judgement.feedback
            else:
                assert judgement.verdict == Verdict.accepted, (solution, judgement.feedback)
                assert judgement.tests_passed == judgement.tests_total == len(problem.tests) + len(problem.hidden_tests)
                assert judgement.feedback == ""


def test_runtime_error_names_type_line_function_and_input(local_judge):
    program = textwrap.dedent(
        """\
        import sys
        def solve(a, b):
            print("dividing", a, b, file=sys.stderr)
            return a // b

        a, b = map(int, input().split())
        print(solve(a, b))
        """
    )
    problem = stdin_problem([("6 3\n", "2\n"), ("7 0\n", "0\n")])
    judgement = local_judge.judge(problem, fence(program))
    assert judgement.verdict == Verdict.runtime_error
    assert judgement.tests_passed == 1 and judgement.tests_total == 2
    lines = judgement.feedback.splitlines()
    assert lines[0] == "Runtime Error"
    assert lines[1] == "ZeroDivisionError: integer division or modulo by zero"
    assert lines[2] == "Line 4 in solve: return a // b"
    assert "Last Executed Input:\n7 0" in judgement.feedback
    assert "Stderr:\ndividing 7 0" in judgement.feedback
    assert "Traceback" not in judgement.feedback


def test_functional_runtime_error_line_in_method(local_judge):
    program = "class Solution:\n    def f(self, nums):\n        total = 0\n        return nums[len(nums)]\n"
    judgement = local_judge.judge(functional_problem([("[1, 2]", "3")]), fence(program))
    assert judgement.verdict == Verdict.runtime_error
    assert "IndexError: list index out of range" in judgement.feedback
    assert "Line 4 in f: return nums[len(nums)]" in judgement.feedback
    assert "Last Executed Input:\n[1, 2]" in judgement.feedback


def test_syntax_error_is_a_runtime_error_with_its_line(local_judge):
    judgement = local_judge.judge(SUM, fence("x = 1\nprint(x +)\n"))
    assert judgement.verdict == Verdict.runtime_error
    assert judgement.feedback.splitlines()[1].startswith("SyntaxError: invalid syntax")
    assert "Line 2: print(x +)" in judgement.feedback


def test_time_limit(local_judge):
    judgement = local_judge.judge(SUM.model_copy(update={"time_limit_s": 1.0}), fence("while True:\n    pass\n"))
    assert judgement.verdict == Verdict.time_limit
    assert judgement.tests_passed == 0
    assert judgement.wall_s < 8  # stops after the first time limit instead of paying one per test
    assert judgement.feedback.startswith("Time Limit Exceeded\nThe program used more than its 1 s of CPU time")
    assert "Last Executed Input:\n1 2" in judgement.feedback


def test_a_program_that_waits_meets_the_wall_clock_backstop_and_is_told_so(local_judge):
    judgement = local_judge.judge(SUM.model_copy(update={"time_limit_s": 0.3}), fence("import time\ntime.sleep(1000)\n"))
    assert judgement.verdict == Verdict.time_limit
    assert "still running after 3 s of wall-clock time" in judgement.feedback
    assert "10x its 0.3 s CPU time limit" in judgement.feedback


def test_suite_time_limit():
    from ttsd.sandbox import make_sandbox

    problem = stdin_problem([(f"{i} 1\n", f"{i + 1}\n") for i in range(6)], time_limit_s=5)
    program = "import time\ntime.sleep(0.5)\na, b = map(int, input().split())\nprint(a + b)\n"
    with Judge(make_sandbox("local"), max_workers=1, suite_time_limit_s=1.2) as judge:
        judgement = judge.judge(problem, fence(program))
    assert judgement.verdict == Verdict.time_limit
    assert 1 <= judgement.tests_passed < 6
    assert "The whole test suite did not finish within 1.2 s" in judgement.feedback


def test_memory_limit(local_judge):
    problem = SUM.model_copy(update={"memory_limit_mb": 256})
    judgement = local_judge.judge(problem, fence("data = bytearray(10 * 1024**3)\nprint(len(data))\n"))
    assert judgement.verdict == Verdict.memory_limit
    assert judgement.feedback.startswith("Memory Limit Exceeded")
    assert "Line 1: data = bytearray(10 * 1024**3)" in judgement.feedback


def test_output_limit():
    from ttsd.sandbox import make_sandbox

    with Judge(make_sandbox("local"), max_workers=1, output_limit_bytes=64 << 10) as judge:
        judgement = judge.judge(SUM, fence("while True:\n    print('spam' * 100)\n"))
    assert judgement.verdict == Verdict.output_limit
    assert judgement.feedback.startswith("Output Limit Exceeded")
    assert len(judgement.feedback) <= FEEDBACK_MAX_CHARS


def test_format_error_and_truncated_are_not_run(local_judge):
    no_block = local_judge.judge(SUM, "I think the answer is to add the numbers.")
    assert no_block.verdict == Verdict.format_error and no_block.tests_total == 3 and no_block.feedback
    cut = local_judge.judge(SUM, fence("a, b = map(int, input().split())\nprint(a + b)") + "\nAlso", "length")
    assert cut.verdict == Verdict.truncated and cut.tests_passed == 0 and cut.code is not None
    assert "length limit" in cut.feedback


def test_wrong_answer_shows_output_expected_and_stderr(local_judge):
    program = "import sys\na, b = map(int, input().split())\nprint('debug', a, file=sys.stderr)\nprint(a * b)\n"
    judgement = local_judge.judge(SUM, fence(program))
    assert judgement.verdict == Verdict.wrong_answer
    assert judgement.tests_passed == 0  # hidden tests are not run after a visible failure
    assert "Input:\n1 2\nOutput:\n2\nExpected:\n3\nStderr:\ndebug 1" in judgement.feedback


def test_hidden_failure_feedback_has_no_content(local_judge):
    program = "a, b = map(int, input().split())\nprint(a + b if a < 10 else 'SECRET?')\n"
    judgement = local_judge.judge(SUM, fence(program))
    assert judgement.verdict == Verdict.wrong_answer
    assert judgement.tests_passed == 2 and judgement.tests_total == 3
    assert judgement.feedback == HIDDEN_FAILURE_FEEDBACK
    assert [r.hidden for r in judgement.test_results] == [False, False, True]


def test_expected_outputs_never_enter_the_sandbox(local_judge):
    # The program prints every file it can see plus its stdin; it passes only if the expected
    # output (a token that is nowhere else) was somewhere inside the sandbox.
    program = textwrap.dedent(
        """\
        import os, sys
        seen = sys.stdin.read()
        for root, _, files in os.walk("."):
            for name in files:
                seen += open(os.path.join(root, name), errors="replace").read()
        token = "TOKEN-" + "7f3a9c"  # never whole in this file, which the walk reads too
        print(token if token in seen else "not found")
        """
    )
    problem = stdin_problem([("x\n", "TOKEN-7f3a9c\n")])
    judgement = local_judge.judge(problem, fence(program))
    assert judgement.verdict == Verdict.wrong_answer
    assert "Output:\nnot found" in judgement.feedback


def test_stdin_exit_is_graded_on_output_like_lcb(local_judge):
    program = "import sys\na, b = map(int, input().split())\nprint(a + b)\nsys.exit(1)\n"
    assert local_judge.judge(SUM, fence(program)).verdict == Verdict.accepted
    crash = local_judge.judge(SUM, fence("import os\nprint(3)\nos._exit(3)\n"))
    assert crash.verdict == Verdict.runtime_error
    assert "The program exited with code 3." in crash.feedback


def test_stdin_has_the_lcb_prelude(local_judge):
    program = "a, b = map(int, input().split())\nq = deque([a, b])\nprint(reduce(add, q))\n"
    assert local_judge.judge(SUM, fence(program)).verdict == Verdict.accepted


# -- functional ------------------------------------------------------------------------------


def test_functional_solution_class_and_top_level_function(local_judge):
    problem = functional_problem([("[1, 2, 3]\n2", "[1, 2]"), ("[]\n0", "[]")])
    method = "class Solution:\n    def f(self, nums: List[int], k: int) -> List[int]:\n        return nums[:k]\n"
    function = "def f(nums, k):\n    return tuple(nums[:k])\n"  # a top-level tuple counts as a list
    nested = "def f(nums, k):\n    return [x for x in nums[:k]] if k == 0 else list(map(lambda x: (x,), nums[:k]))\n"
    judgements = local_judge.judge_many(problem, [fence(method), fence(function), fence(nested)])
    assert [j.verdict for j in judgements] == [Verdict.accepted, Verdict.accepted, Verdict.wrong_answer]
    assert "Output:\n[(1,), (2,)]" in judgements[2].feedback and "Expected:\n[1, 2]" in judgements[2].feedback


def test_functional_missing_entry_point(local_judge):
    judgement = local_judge.judge(functional_problem([("1", "1"), ("2", "2")]), fence("def g(x):\n    return x\n"))
    assert judgement.verdict == Verdict.runtime_error
    assert "no function 'f'" in judgement.feedback
    assert len(judgement.test_results) == 1  # a load error stops judging: every test would fail alike


def test_functional_prints_are_shown_separately(local_judge):
    program = "def f(x):\n    print('thinking about', x)\n    return x + 1\n"
    judgement = local_judge.judge(functional_problem([("41", "43")]), fence(program))
    assert judgement.verdict == Verdict.wrong_answer
    assert "Output:\n42\nExpected:\n43\nPrinted Output:\nthinking about 41" in judgement.feedback


@pytest.mark.parametrize(
    "cheat",
    [
        # exiting "successfully" before returning anything
        "import sys\ndef f(x):\n    sys.exit(0)\n",
        "import os\ndef f(x):\n    os._exit(0)\n",
        # an object that equals everything
        "class Eq:\n    def __eq__(self, other):\n        return True\ndef f(x):\n    return Eq()\n",
        "class I(int):\n    def __eq__(self, other):\n        return True\ndef f(x):\n    return I(0)\n",
        # printing a fake result report: the nonce is unknown and the judge compares values itself
        'import json\ndef f(x):\n    print(json.dumps({"status": "returned", "value": 43}))\n    return 0\n',
        # patching the comparison helpers it might guess at
        "import builtins\nbuiltins.isinstance = lambda *a: True\ndef f(x):\n    return None\n",
    ],
)
def test_functional_cheats_do_not_pass(local_judge, cheat):
    judgement = local_judge.judge(functional_problem([("41", "43")]), fence(cheat))
    assert judgement.verdict in (Verdict.wrong_answer, Verdict.runtime_error), judgement


# -- assert (HumanEval) ------------------------------------------------------------------------

HUMANEVAL_TEST = textwrap.dedent(
    """\
    METADATA = {}


    def check(candidate):
        assert candidate([1, 2, 3]) == 6
        assert candidate([]) == 0
        assert candidate([-1, 1]) == 0
    """
)
ASSERT_PROBLEM = Problem(
    id="he", statement="sum a list", kind="assert", entry_point="total", tests=[TestCase(input=HUMANEVAL_TEST)]
)


def test_assert_kind(local_judge):
    right = "def total(xs):\n    return sum(xs)\n"
    wrong = "def total(xs):\n    return sum(xs) if xs else 1\n"
    good, bad = local_judge.judge_many(ASSERT_PROBLEM, [fence(right), fence(wrong)])
    assert good.verdict == Verdict.accepted and good.tests_passed == 1
    assert bad.verdict == Verdict.wrong_answer
    assert "Input:\ntotal([])\nOutput:\n1\nExpected:\nthe assertion to hold: assert candidate([]) == 0" in bad.feedback


@pytest.mark.parametrize(
    "cheat",
    [
        "import sys\nsys.exit(0)\n",
        "import os\nos._exit(0)\n",
        "def total(xs):\n    raise SystemExit(0)\n",
        "class Eq:\n    def __eq__(self, other):\n        return True\ndef total(xs):\n    return Eq()\n",
        "import atexit, os\natexit.register(lambda: os.write(1, b'passed'))\ndef total(xs):\n    return 1\n",
        "def total(xs):\n    print('\\n{\"status\": \"passed\"}')\n    return -1\n",
    ],
)
def test_assert_cheats_do_not_pass(local_judge, cheat):
    assert local_judge.judge(ASSERT_PROBLEM, fence(cheat)).verdict != Verdict.accepted


# -- the pool ------------------------------------------------------------------------------------


class CountingSandbox:
    """The real local sandbox, counting how many jobs run at once."""

    name = "counting-local"

    def __init__(self):
        from ttsd.sandbox import make_sandbox

        self.inner = make_sandbox("local")
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0

    def run(self, job):
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            return self.inner.run(job)
        finally:
            with self.lock:
                self.running -= 1

    def close(self):
        self.inner.close()


def test_judge_many_is_bounded_and_keeps_order():
    sandbox = CountingSandbox()
    problem = stdin_problem([("1 2\n", "3\n")], time_limit_s=5)
    right = "import time\ntime.sleep(0.3)\na, b = map(int, input().split())\nprint(a + b)\n"
    wrong = "import time\ntime.sleep(0.3)\nprint(0)\n"
    responses = [fence(right), fence(wrong), "no code", fence(right), fence(wrong), fence(right)]
    with Judge(sandbox, max_workers=2) as judge:
        judgements = judge.judge_many(problem, responses, ["stop", "stop", "stop", "stop", "stop", "length"])
    assert [j.verdict for j in judgements] == [
        Verdict.accepted,
        Verdict.wrong_answer,
        Verdict.format_error,
        Verdict.accepted,
        Verdict.wrong_answer,
        Verdict.truncated,
    ]
    assert sandbox.most == 2  # concurrent, and never more than max_workers
    sandbox.close()


def test_judge_many_checks_lengths(local_judge):
    with pytest.raises(ValueError):
        local_judge.judge_many(SUM, ["a", "b"], ["stop"])


# ---------------------------------------------------------------------------------------------
# evalplus (MBPP+): many calls in one process, EvalPlus's comparison
# ---------------------------------------------------------------------------------------------


def evalplus_problem(visible, hidden=(), **fields) -> Problem:
    """visible/hidden: (arguments, expected) pairs of plain Python values."""

    def test(arguments, expected):
        return TestCase(input=json.dumps(harness.encode_value(list(arguments))), output=json.dumps(harness.encode_value(expected)))

    data = dict(id="ep", statement="s", kind="evalplus", entry_point="f", time_limit_s=2.0)
    data.update(fields)
    return Problem(**data, tests=[test(*t) for t in visible], hidden_tests=[test(*t) for t in hidden])


def test_evalplus_judging_one_process_per_group(local_judge):
    problem = evalplus_problem(
        [(((1, 2), 3), (1, 2, 3)), (((), 0), (0,))],
        [(((1.5,), 0.1), (1.5, 0.1)), ((({1, 2},), 4), ({1, 2}, 4))],
    )
    good = local_judge.judge_program(problem, "def f(t, x):\n    return tuple(t) + (x,)\n")
    assert good.passed and good.tests_passed == 4 and [r.hidden for r in good.test_results] == [False, False, True, True]
    wrong = local_judge.judge_program(problem, "def f(t, x):\n    print('called', x)\n    return list(t) + [x]\n")
    assert wrong.verdict == Verdict.wrong_answer and wrong.tests_passed == 0 and len(wrong.test_results) == 2
    assert "Input:\nf((1, 2), 3)\nOutput:\n[1, 2, 3]\nExpected:\n(1, 2, 3)" in wrong.feedback
    # what each call printed goes with that call
    blocks = {block.split("\n")[1]: block for block in wrong.feedback.split("\n\n")[1:]}
    assert "Printed Output:\ncalled 3" in blocks["f((1, 2), 3)"] and "called 0" not in blocks["f((1, 2), 3)"]
    assert "Printed Output:\ncalled 0" in blocks["f((), 0)"]
    # a hidden failure: judging stops at it, and the feedback names no hidden content
    hidden = local_judge.judge_program(problem, "def f(t, x):\n    return tuple(t) + (x,) if x != 0.1 else ()\n")
    assert hidden.verdict == Verdict.wrong_answer and hidden.feedback == HIDDEN_FAILURE_FEEDBACK
    assert [r.verdict for r in hidden.test_results] == [Verdict.accepted] * 2 + [Verdict.wrong_answer]


def test_evalplus_errors_limits_and_subclassed_results(local_judge):
    problem = evalplus_problem([((1,), {1: 1}), ((2,), {2: 1}), ((3,), {3: 1})], [((4,), {4: 1})])
    counter = local_judge.judge_program(problem, "from collections import Counter\ndef f(x):\n    return Counter([x])\n")
    assert counter.passed, counter.feedback  # a Counter equals the dict it holds, as in EvalPlus
    raising = local_judge.judge_program(problem, "def f(x):\n    if x == 2:\n        raise KeyError(x)\n    return {x: 1}\n")
    assert raising.verdict == Verdict.runtime_error and "KeyError: 2" in raising.feedback
    assert [r.verdict for r in raising.test_results] == [Verdict.accepted, Verdict.runtime_error, Verdict.accepted]
    spin = local_judge.judge_program(problem, "def f(x):\n    while x == 2:\n        pass\n    return {x: 1}\n")
    assert spin.verdict == Verdict.time_limit and "f(2)" in spin.feedback
    assert [r.verdict for r in spin.test_results] == [Verdict.accepted, Verdict.time_limit]  # stops there
    missing = local_judge.judge_program(problem, "def g(x):\n    return {x: 1}\n")
    assert missing.verdict == Verdict.runtime_error and len(missing.test_results) == 1 and "no function 'f'" in missing.feedback
    exits = local_judge.judge_program(problem, "import os\ndef f(x):\n    os._exit(0)\n")
    assert exits.verdict == Verdict.runtime_error and "ended before the test finished" in exits.feedback


def test_evalplus_problem_files_are_checked():
    with pytest.raises(ValueError, match=r"tests\[0\]\.input: must be a JSON array"):
        Problem(id="x", statement="s", kind="evalplus", entry_point="f", tests=[TestCase(input="3", output="1")])
    with pytest.raises(ValueError, match="apply only to kind 'evalplus'"):
        Problem(id="x", statement="s", kind="functional", entry_point="f", atol=0.1, tests=[TestCase(input="3", output="1")])


# ---------------------------------------------------------------------------------------------
# Docker backend (CI starts dockerd and builds the image; these are never skipped there)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def docker_judge():
    from ttsd.sandbox import make_sandbox

    sandbox = make_sandbox("docker", pool_size=2)
    judge = Judge(sandbox, max_workers=2)
    yield judge
    judge.close()
    sandbox.close()


@pytest.mark.docker
def test_docker_examples_and_verdicts(docker_judge):
    problem = load_problem(EXAMPLES / "sum-two-numbers.json")
    programs = {
        Verdict.accepted: (EXAMPLES / "solutions" / "sum-two-numbers.py").read_text(),
        Verdict.wrong_answer: (EXAMPLES / "solutions" / "sum-two-numbers.wrong.py").read_text(),
        Verdict.runtime_error: "def solve():\n    return 1 // 0\nsolve()\n",
    }
    judgements = docker_judge.judge_many(problem, [fence(p) for p in programs.values()])
    assert [j.verdict for j in judgements] == list(programs), judgements
    assert "Line 2 in solve: return 1 // 0" in judgements[2].feedback


@pytest.mark.docker
def test_docker_functional_and_limits(docker_judge):
    problem = load_problem(EXAMPLES / "bounded-range-subarrays.json")
    solution = (EXAMPLES / "solutions" / "bounded-range-subarrays.py").read_text()
    accepted = docker_judge.judge(problem, fence(solution))
    assert accepted.verdict == Verdict.accepted, accepted
    quick = SUM.model_copy(update={"time_limit_s": 1.0, "memory_limit_mb": 256})
    spin = docker_judge.judge(quick, fence("while True:\n    pass\n"))
    assert spin.verdict == Verdict.time_limit, spin
    memory = docker_judge.judge(quick, fence("data = bytearray(10 * 1024**3)\n"))
    assert memory.verdict == Verdict.memory_limit, memory

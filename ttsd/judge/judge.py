"""The `Judge`: extract the program, run it on the problem's tests in a sandbox, give a verdict and feedback.

How a verdict is reached (`Judge.judge_code`, one loop): the tests run in batches, a batch being
the tests that share one sandboxed process (each test alone for stdin/functional/assert; for
evalplus and pytest the visible tests together, then the hidden ones). Visible tests come first. A failing
visible test does not stop the visible tests (the feedback may show the two shortest failures),
but hidden tests are then not run; judging stops at the first hidden failure (as LCB does), after a
time limit (each further test would cost a full limit), and after an error in loading a
functional/assert/evalplus/pytest program (every test would fail the same way). So `tests_passed` counts
passed tests among those run. The verdict is that of the first failing test in that order.

Each process gets the problem's per-test limit, cut to what is left of the whole suite's limit
(`Judge.suite_time_limit_s`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from ttsd.judge import evalplus, one_test, pytest_suite
from ttsd.judge.extraction import Extraction, extract_code, program_from_text
from ttsd.judge.feedback import ALL_FEEDBACK, FORMAT_ERROR_FEEDBACK, TRUNCATED_FEEDBACK, FeedbackOptions, feedback_text
from ttsd.judge.records import Judgement, PreparedTest, TestResult, TestRun, Verdict
from ttsd.problems.model import Problem
from ttsd.sandbox.base import Sandbox


class Judge:
    """Judge responses to one problem with a sandbox; `judge_many` fans out over a bounded pool.

    suite_time_limit_s: wall-clock budget for all tests of one response (None: the larger of 60 s
    and twice the problem's per-test limit). output_limit_bytes: stdout/stderr cap per test (raised
    for a test whose expected output is large). feedback: which parts the feedback text shows.
    """

    def __init__(
        self,
        sandbox: Sandbox,
        max_workers: int = 4,
        suite_time_limit_s: float | None = None,
        output_limit_bytes: int = 4 << 20,
        feedback: FeedbackOptions = ALL_FEEDBACK,
    ):
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self.sandbox = sandbox
        self.max_workers = max_workers
        self.suite_time_limit_s = suite_time_limit_s
        self.output_limit_bytes = output_limit_bytes
        self.feedback = feedback
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._collections: dict[str, pytest_suite.PytestCollection] = {}  # pytest problems' test ids
        self._collections_lock = threading.Lock()

    # -- public ----------------------------------------------------------------------------------

    def judge(self, problem: Problem, response: str, finish_reason: str | None = "stop") -> Judgement:
        """Extract the program from `response` and judge it."""
        return self._judge_extraction(problem, extract_code(response, finish_reason))

    def judge_program(self, problem: Problem, text: str) -> Judgement:
        """Judge a solution file: a bare program, or a whole model response (detected)."""
        return self._judge_extraction(problem, program_from_text(text))

    def judge_many(
        self,
        problem: Problem,
        responses: Sequence[str],
        finish_reasons: Sequence[str | None] | None = None,
    ) -> list[Judgement]:
        """Judge many responses concurrently (at most `max_workers` at a time); order is kept."""
        if finish_reasons is None:
            finish_reasons = ["stop"] * len(responses)
        if len(finish_reasons) != len(responses):
            raise ValueError(f"{len(responses)} responses but {len(finish_reasons)} finish reasons")
        prepared = self.prepare(problem)  # once, not per response: inputs can be megabytes of JSON
        pool = self._executor()
        futures = [
            pool.submit(self._judge_extraction, problem, extract_code(r, f), prepared)
            for r, f in zip(responses, finish_reasons)
        ]
        return [future.result() for future in futures]

    def judge_code(self, problem: Problem, code: str, prepared: list[PreparedTest] | None = None) -> Judgement:
        """Run an already extracted program on the problem's tests (the rules: this module's docstring)."""
        started = time.monotonic()
        prepared = self.prepare(problem) if prepared is None else prepared
        suite_limit = self._suite_limit(problem)
        deadline = started + suite_limit
        runs: list[TestRun] = []
        for batch in _batches(problem, prepared):
            hidden = batch[0].hidden
            if hidden and any(not run.passed for run in runs):
                break  # hidden tests run only once every visible test passed
            remaining = deadline - time.monotonic()
            if remaining <= 0.01:  # the suite's budget is spent before this batch could start
                runs.append(_suite_timeout(batch[0]))
                break
            batch_runs = self._run_batch(problem, code, batch, remaining)
            failure = next((i for i, run in enumerate(batch_runs) if not run.passed), None)
            if failure is None:
                runs.extend(batch_runs)
                continue
            runs.extend(batch_runs[: failure + 1] if hidden else batch_runs)
            first = batch_runs[failure]
            load_error = first.error is not None and first.error.phase == "load" and problem.kind != "stdin"
            if hidden or first.verdict == Verdict.time_limit or load_error:
                break  # a hidden failure decides; a time limit would cost each further test; a load error fails all alike
        return self._judgement(problem, code, runs, len(prepared), started, suite_limit)

    def close(self) -> None:
        """Stop the worker pool (the sandbox is the caller's to close)."""
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None

    def __enter__(self) -> Judge:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def prepare(self, problem: Problem) -> list[PreparedTest]:
        """`prepare_tests`, and for a pytest problem its test ids, collected once per set of files
        in this judge's sandbox (`pytest_suite.collect`: PytestCollectionError for a bad file)."""
        if problem.kind != "pytest":
            return prepare_tests(problem)
        key = pytest_suite.collection_key(problem)
        with self._collections_lock:
            collection = self._collections.get(key)
        if collection is None:
            collection = pytest_suite.collect(self.sandbox, problem)
            with self._collections_lock:
                self._collections[key] = collection
        return pytest_suite.prepare_pytest(collection)

    # -- internals -------------------------------------------------------------------------------

    def _run_batch(self, problem: Problem, code: str, batch: list[PreparedTest], time_limit_s: float) -> list[TestRun]:
        if problem.kind == "pytest":
            return pytest_suite.run_batch(self.sandbox, problem, code, batch, time_limit_s, self.output_limit_bytes)
        if problem.kind == "evalplus":
            return evalplus.run_batch(self.sandbox, problem, code, batch, time_limit_s, self.output_limit_bytes)
        (item,) = batch
        limit = min(problem.time_limit_s, time_limit_s)
        return [one_test.run_test(self.sandbox, problem, code, item, limit, self.output_limit_bytes)]

    def _judgement(
        self, problem: Problem, code: str, runs: list[TestRun], tests_total: int, started: float, suite_limit: float
    ) -> Judgement:
        first_failure = next((run for run in runs if not run.passed), None)
        feedback = ""
        if first_failure is not None:
            feedback = feedback_text(
                runs,
                memory_limit_mb=problem.memory_limit_mb,
                output_limit_bytes=self.output_limit_bytes,
                suite_time_limit_s=suite_limit,
                options=self.feedback,
            )
        return Judgement(
            verdict=Verdict.accepted if first_failure is None else first_failure.verdict,
            tests_passed=sum(1 for run in runs if run.passed),
            tests_total=tests_total,
            feedback=feedback,
            code=code,
            wall_s=time.monotonic() - started,
            test_results=[TestResult(index=r.index, hidden=r.hidden, verdict=r.verdict, wall_s=r.wall_s) for r in runs],
        )

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.max_workers, thread_name_prefix="ttsd-judge")
            return self._pool

    def _judge_extraction(
        self, problem: Problem, extraction: Extraction, prepared: list[PreparedTest] | None = None
    ) -> Judgement:
        prepared = self.prepare(problem) if prepared is None else prepared
        if extraction.verdict is not None:
            feedback = TRUNCATED_FEEDBACK if extraction.verdict == Verdict.truncated else FORMAT_ERROR_FEEDBACK
            return Judgement(
                verdict=extraction.verdict,
                tests_total=len(prepared),
                feedback=feedback,
                code=extraction.code,
            )
        assert extraction.code is not None
        return self.judge_code(problem, extraction.code, prepared)

    def _suite_limit(self, problem: Problem) -> float:
        if self.suite_time_limit_s is not None:
            return self.suite_time_limit_s
        return max(60.0, 2 * problem.time_limit_s)


def prepare_tests(problem: Problem) -> list[PreparedTest]:
    """The tests in judging order (visible, then hidden) with what goes into the sandbox;
    ValueError for a broken problem. (pytest problems need their files collected: `Judge.prepare`.)"""
    if problem.kind == "pytest":
        raise ValueError(f"problem {problem.id!r}: a pytest problem's tests are collected in a sandbox (Judge.prepare)")
    prepare = evalplus.prepare_evalplus if problem.kind == "evalplus" else one_test.prepare_test
    tests = [(i, t, False) for i, t in enumerate(problem.tests)]
    tests += [(i, t, True) for i, t in enumerate(problem.hidden_tests)]
    return [
        prepare(f"problem {problem.id!r}, {'hidden ' if hidden else ''}test {index}", problem, index, hidden, test)
        for index, test, hidden in tests
    ]


def _batches(problem: Problem, prepared: list[PreparedTest]) -> list[list[PreparedTest]]:
    """The tests that share one sandboxed process, in judging order."""
    if problem.kind not in ("evalplus", "pytest"):  # those run a group (a file) per process
        return [[item] for item in prepared]
    groups = ([item for item in prepared if not item.hidden], [item for item in prepared if item.hidden])
    return [group for group in groups if group]


def _suite_timeout(item: PreparedTest) -> TestRun:
    return TestRun(
        index=item.index,
        hidden=item.hidden,
        verdict=Verdict.time_limit,
        input=item.test.input,
        expected=item.test.output,
        detail="the suite's time limit ran out before this test",
        suite_cut=True,
        time_limit_s=0.0,
    )

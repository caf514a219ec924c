"""pytest problems: the candidate is saved as `<module>.py` and a pytest file runs on it, in ONE
sandboxed process per file (the harness's `pytest` mode), each test with the problem's per-test
time limit; one verdict per collected test (a parametrized case is a test).

* `collect`: the test ids of a problem's files, found by collecting them in the sandbox against a
  stand-in module (the test files are untrusted code too). A file that does not parse, imports
  something missing or collects no test is the problem's fault: `PytestCollectionError`, which the
  CLI reports at load (exit 2) before any attempt is made.
* `run_batch` runs one file (visible, or hidden) on a program and `classify_tests` turns the
  harness's reports into one `TestRun` per test id of the collection, in collection order.

Verdicts: passed -> accepted; an assertion (or `pytest.fail`) in the test's call -> wrong answer;
any other exception -> runtime error (MemoryError: memory limit); the per-test limit -> time
limit; a skipped or xfailed test never passes (runtime error). When the program cannot be
imported (the file fails to collect with the real module) the first test gets a load error, as
functional programs do, and judging stops.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from typing import Any

from pydantic import BaseModel

from ttsd.judge.records import ErrorInfo, PreparedTest, TestRun, Verdict
from ttsd.judge.sandboxed import HARNESS_FILE, HARNESS_SOURCE, exit_detail, ran_out_of_time
from ttsd.problems.model import Problem, TestCase
from ttsd.sandbox.base import ExecResult, Job, Sandbox, SandboxUnavailable

# The names the test files get in the sandbox (and in a problem folder).
TEST_FILES = {"test_file": "test_visible.py", "hidden_test_file": "test_hidden.py"}
COLLECT_TIME_LIMIT_S = 30.0
_ASSERTION_TYPES = ("AssertionError", "Failed")  # `assert`, and pytest.fail()
_TIMEOUT_TYPE = "_TestTimeout"  # the harness's per-test alarm
_LAST_ERROR_LINE = re.compile(r"^E\s+(.*)$", re.MULTILINE)
_FRAME_HEADER = re.compile(r"^(\S[^:]*):\d+: in ")


class PytestCollectionError(ValueError):
    """A test file of the problem that pytest cannot collect: `field` is test_file or hidden_test_file."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class PytestCollection(BaseModel):
    """The test ids of a problem's files, in pytest's order."""

    visible: list[str]
    hidden: list[str] = []


def collection_key(problem: Problem) -> str:
    """What a collection depends on: the files and the module name."""
    digest = hashlib.sha256()
    for part in (problem.module_name, problem.test_file or "", problem.hidden_test_file or ""):
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()


def collect(sandbox: Sandbox, problem: Problem) -> PytestCollection:
    """Collect the problem's test files in the sandbox against a stand-in module.

    Raises PytestCollectionError for a file that cannot be collected or collects no test, and
    SandboxUnavailable when the sandbox's python3 has no pytest.
    """
    ids: dict[str, list[str]] = {}
    for field, file_name in TEST_FILES.items():
        source = getattr(problem, field)
        if source is None:
            ids[field] = []
            continue
        job, nonce = pytest_job(problem, field, None, time_limit_s=COLLECT_TIME_LIMIT_S, per_test_limit_s=0,
                          output_limit_bytes=1 << 20, collect_only=True)
        result = sandbox.run(job)
        reports = _reports(result.stdout, nonce)
        collected = next((r for r in reports if r.get("event") == "collected"), None)
        if collected is None:
            raise PytestCollectionError(field, f"pytest could not collect {file_name}: {_why_no_report(result, nonce)}")
        if collected.get("errors"):
            report = own_frames(str(collected["errors"][0].get("report", ""))).strip()
            raise PytestCollectionError(field, f"pytest could not collect {file_name}:\n{report}")
        if not collected.get("tests"):
            raise PytestCollectionError(field, f"pytest collects no test from {file_name}")
        ids[field] = [str(t) for t in collected["tests"]]
    return PytestCollection(visible=ids["test_file"], hidden=ids["hidden_test_file"])


def prepare_pytest(collection: PytestCollection) -> list[PreparedTest]:
    """One prepared test per test id: the id is its `input` (what feedback names it by)."""
    items = [(i, nodeid, False) for i, nodeid in enumerate(collection.visible)]
    items += [(i, nodeid, True) for i, nodeid in enumerate(collection.hidden)]
    return [PreparedTest(index=i, hidden=hidden, test=TestCase(input=nodeid), stdin="") for i, nodeid, hidden in items]


def run_batch(
    sandbox: Sandbox, problem: Problem, code: str, items: list[PreparedTest], time_limit_s: float, output_limit_bytes: int
) -> list[TestRun]:
    """Run the file of `items` (all visible or all hidden) on `code` in one process with at most
    `time_limit_s` for all of it, each test with the problem's per-test limit."""
    field = "hidden_test_file" if items[0].hidden else "test_file"
    per_test = min(problem.time_limit_s, time_limit_s)
    job, nonce = pytest_job(problem, field, code, time_limit_s=time_limit_s, per_test_limit_s=per_test,
                      output_limit_bytes=output_limit_bytes, collect_only=False)
    result = sandbox.run(job)
    return classify_tests(problem, items, result, nonce, per_test_limit_s=per_test)


def pytest_job(
    problem: Problem, field: str, code: str | None, *, time_limit_s: float, per_test_limit_s: float,
    output_limit_bytes: int, collect_only: bool,
) -> tuple[Job, str]:
    nonce = secrets.token_hex(16)
    file_name = TEST_FILES[field]
    files = {HARNESS_FILE: HARNESS_SOURCE, file_name: getattr(problem, field) or ""}
    if code is not None:
        files[f"{problem.module_name}.py"] = code
    payload = json.dumps({"time_limit_s": per_test_limit_s, "collect_only": collect_only})
    job = Job(
        files=files,
        argv=["python3", "-I", HARNESS_FILE, "pytest", problem.module_name, file_name],
        stdin=nonce + "\n" + payload,  # the nonce comes first on stdin: in no file, argument or variable
        time_limit_s=time_limit_s,
        memory_limit_mb=problem.memory_limit_mb,
        output_limit_bytes=output_limit_bytes,
    )
    return job, nonce


def _report_lines(stream: str, nonce: str) -> list[tuple[int, int, dict]]:
    """(start, end, record) of every `NONCE {json}` line in `stream`."""
    found = []
    marker = f"\n{nonce} "
    at = stream.find(marker)
    while at >= 0:
        end = stream.find("\n", at + len(marker))
        end = len(stream) if end < 0 else end
        try:
            record = json.loads(stream[at + len(marker) : end])
        except ValueError:
            record = None
        if isinstance(record, dict):
            found.append((at, end + 1, record))
        at = stream.find(marker, end)
    return found


def _reports(stream: str, nonce: str) -> list[dict]:
    return [record for _, _, record in _report_lines(stream, nonce)]


def _printed(stream: str, nonce: str) -> dict[str, str]:
    """What each test printed on this stream: the text between its start and result marks (or
    the end, for the test the process ended in)."""
    printed: dict[str, str] = {}
    lines = _report_lines(stream, nonce)
    for position, (_, end, record) in enumerate(lines):
        if record.get("event") != "start":
            continue
        following = lines[position + 1][0] if position + 1 < len(lines) else len(stream)
        printed[str(record.get("nodeid"))] = stream[end:following].lstrip("\n") if following > end else ""
    return printed


def _why_no_report(result: ExecResult, nonce: str) -> str:
    if ran_out_of_time(result):
        return "it did not finish collecting in time"
    if result.output_truncated:
        return "it printed too much"
    if result.memory_exceeded:
        return "it ran out of memory"
    for record in _reports(result.stdout, nonce) + _reports(result.stderr, nonce):
        if record.get("event") == "unavailable":
            raise SandboxUnavailable(
                f"pytest is not installed for the sandbox's python3 ({record.get('message')}): "
                "run scripts/setup (local: apt-get install python3-pytest; docker: ttsd sandbox build)"
            )
        if record.get("status") == "error":
            return f"pytest itself failed: {record.get('type')}: {record.get('message')}"
    return exit_detail(result.exit_code)


def classify_tests(
    problem: Problem, items: list[PreparedTest], result: ExecResult, nonce: str, per_test_limit_s: float
) -> list[TestRun]:
    """One run per item, in order, up to the test the process ended in (reports: see the harness)."""
    reports = _reports(result.stdout, nonce)
    stdout_of, stderr_of = _printed(result.stdout, nonce), _printed(result.stderr, nonce)
    collected = next((r for r in reports if r.get("event") == "collected"), None)

    def run(item: PreparedTest, verdict: Verdict, **fields: Any) -> TestRun:
        nodeid = item.test.input
        fields.setdefault("stdout", stdout_of.get(nodeid, ""))
        fields.setdefault("stderr", stderr_of.get(nodeid, ""))
        return TestRun(index=item.index, hidden=item.hidden, verdict=verdict, kind="pytest", input=nodeid,
                       time_limit_s=per_test_limit_s, **fields)

    if collected is None or collected.get("errors"):
        # The program could not be imported (or the process ended before collection did).
        first = items[0]
        if collected is not None:
            report = str(collected["errors"][0].get("report", ""))
            return [run(first, Verdict.runtime_error, error=_load_error(report), stdout="", stderr="")]
        verdict, detail, suite_cut = _process_verdict(result, per_test_limit_s, problem)
        detail = detail or "the program ended before the tests were collected (did it call exit()?)"
        return [run(first, verdict, detail=detail, suite_cut=suite_cut, stdout=_strip_reports(result.stdout, nonce),
                    stderr=_strip_reports(result.stderr, nonce), error=ErrorInfo(type="", phase="load") if verdict == Verdict.runtime_error else None)]
    results = {str(r.get("nodeid")): r for r in reports if r.get("event") == "result"}
    started = {str(r.get("nodeid")) for r in reports if r.get("event") == "start"}
    timed_out = {str(r.get("nodeid")) for r in reports if r.get("event") == "timeout"}
    process_ended_early = result.exit_code != 0 or result.timed_out or result.output_truncated
    runs: list[TestRun] = []
    for item in items:
        nodeid = item.test.input
        if nodeid in timed_out:
            runs.append(run(item, Verdict.time_limit, wall_s=per_test_limit_s))
        elif nodeid in results:
            runs.append(_from_result(results[nodeid], run, item))
        elif nodeid in started:  # the process ended inside this test
            verdict, detail, suite_cut = _process_verdict(result, per_test_limit_s, problem)
            runs.append(run(item, verdict, detail=detail, suite_cut=suite_cut))
            break
        elif process_ended_early:
            break  # never reached
        else:  # the run ended cleanly without this test: deselected or renamed from inside
            runs.append(run(item, Verdict.runtime_error, detail="the test did not run"))
    if not runs:  # the process ended between tests: the next test is charged with it
        verdict, detail, suite_cut = _process_verdict(result, per_test_limit_s, problem)
        runs.append(run(items[0], verdict, detail=detail, suite_cut=suite_cut))
    return runs


def _from_result(record: dict, run, item: PreparedTest) -> TestRun:
    wall_s = float(record.get("wall_s") or 0.0)
    if record.get("outcome") == "passed":
        return run(item, Verdict.accepted, wall_s=wall_s)
    if record.get("outcome") == "skipped":
        return run(item, Verdict.runtime_error, wall_s=wall_s, detail="the test was skipped or xfailed, which never counts as passed")
    exception = str(record.get("exception") or "")
    error = ErrorInfo(type=exception, message=str(record.get("message") or ""), traceback=own_frames(str(record.get("report") or "")),
                      phase=str(record.get("phase") or "call"), where="test")
    if exception == _TIMEOUT_TYPE:
        return run(item, Verdict.time_limit, wall_s=wall_s)
    if exception == "MemoryError":
        return run(item, Verdict.memory_limit, wall_s=wall_s, error=error)
    if exception in _ASSERTION_TYPES and error.phase == "call":
        return run(item, Verdict.wrong_answer, wall_s=wall_s, error=error)
    return run(item, Verdict.runtime_error, wall_s=wall_s, error=error)


def _process_verdict(result: ExecResult, per_test_limit_s: float, problem: Problem) -> tuple[Verdict, str, bool]:
    """The verdict of the test the process ended in: (verdict, detail, suite_cut)."""
    if ran_out_of_time(result):
        # the per-test alarm did not fire (blocked, or a long call in C): the process's own limit did
        return Verdict.time_limit, "", per_test_limit_s < problem.time_limit_s
    if result.output_truncated:
        return Verdict.output_limit, "", False
    if result.memory_exceeded:
        return Verdict.memory_limit, "", False
    return Verdict.runtime_error, exit_detail(result.exit_code), False


def own_frames(report: str) -> str:
    """pytest's report without the frames of code outside the work directory (pytest's own
    import machinery, the harness): those are shown with absolute paths, the problem's files and
    the program with their names."""
    kept: list[str] = []
    skipping = False
    for line in report.split("\n"):
        header = _FRAME_HEADER.match(line)
        if header:
            path = header.group(1)
            skipping = (path.startswith(("/", "<")) and not path.startswith("/work/")) or path == HARNESS_FILE
        elif not line.startswith(" "):
            skipping = False
        if not skipping:
            kept.append(line)
    return "\n".join(kept)


def _load_error(report: str) -> ErrorInfo:
    """The program failed to import: the exception pytest shows last, and its whole report."""
    found = _LAST_ERROR_LINE.findall(report)
    last = found[-1].strip() if found else ""
    kind, _, message = last.partition(": ")
    return ErrorInfo(type=kind or "ImportError", message=message, traceback=own_frames(report).strip(), phase="load", where="solution")


def _strip_reports(stream: str, nonce: str) -> str:
    kept, position = [], 0
    for start, end, _ in _report_lines(stream, nonce):
        kept.append(stream[position:start])
        position = end
    kept.append(stream[position:])
    return "".join(kept).strip("\n")

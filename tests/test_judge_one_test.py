"""One test in its own process: the verdict of a raw run (ttsd/judge/one_test.py)."""

from __future__ import annotations

from ttsd.judge import Verdict, classify
from ttsd.sandbox.base import ExecResult

def test_classify_from_raw_results():
    nonce = "n0nce"
    ok = ExecResult(stdout="3\n", exit_code=0)
    assert classify("stdin", ok, nonce, "3").verdict == Verdict.accepted
    # a memory flag does not fail a program that ended cleanly with the right answer...
    noisy = ExecResult(stdout="3\n", stderr="out of memory? no\n", exit_code=0, memory_exceeded=True)
    assert classify("stdin", noisy, nonce, "3").verdict == Verdict.accepted
    # ...but explains one that died
    assert classify("stdin", ExecResult(exit_code=None, memory_exceeded=True), nonce, "3").verdict == Verdict.memory_limit
    assert classify("stdin", ExecResult(stdout="3\n", exit_code=None, timed_out=True), nonce, "3").verdict == Verdict.time_limit
    assert classify("stdin", ExecResult(stdout="3", exit_code=0, output_truncated=True), nonce, "3").verdict == Verdict.output_limit
    segfault = classify("stdin", ExecResult(stdout="3\n", exit_code=-11), nonce, "3")
    assert segfault.verdict == Verdict.runtime_error and "SIGSEGV" in segfault.detail
    # functional: the value comes only from the report carrying this run's nonce
    report = f'debug\n{nonce} {{"status": "returned", "value": {{"$tuple": [1, 2]}}}}\n'
    returned = classify("functional", ExecResult(stdout=report, exit_code=0), nonce, "[1, 2]", [1, 2])
    assert returned.verdict == Verdict.accepted and returned.stdout.strip() == "debug"
    forged = 'other {"status": "returned", "value": [1, 2]}\n'
    assert classify("functional", ExecResult(stdout=forged, exit_code=0), nonce, "[1, 2]", [1, 2]).verdict == Verdict.runtime_error

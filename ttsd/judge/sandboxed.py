"""One sandboxed run of the harness (`ttsd/judge/harness.py`) around a program, and reading its raw result.

Only inputs enter the sandbox; the harness reports raw results as `NONCE {json}` lines (the
per-run random nonce tells them apart from anything the program prints), and the comparison with
the expected output happens outside (`ttsd.judge.comparison`).
"""

from __future__ import annotations

import json
from pathlib import Path

from ttsd.judge.harness import SOLUTION_FILE
from ttsd.sandbox.base import ExecResult, Job

HARNESS_FILE = "_ttsd_harness.py"
HARNESS_SOURCE = Path(__file__).with_name("harness.py").read_text(encoding="utf-8")
_OUTPUT_HEADROOM_BYTES = 64 << 10

_SIGNALS = {
    6: "SIGABRT",
    9: "SIGKILL",
    11: "SIGSEGV (segmentation fault; often a too deep recursion)",
    25: "SIGXFSZ (a file grew too large)",
}
_SIGXCPU = 24  # the CPU-seconds rlimit: a time limit, whatever the backend reported


def harness_job(
    code: str, mode: list[str], stdin: str, *, time_limit_s: float, memory_limit_mb: int, output_limit_bytes: int
) -> Job:
    """The job that runs `code` (as solution.py) under the harness: `python3 -I harness MODE...`."""
    return Job(
        files={SOLUTION_FILE: code, HARNESS_FILE: HARNESS_SOURCE},
        argv=["python3", "-I", HARNESS_FILE, *mode],
        stdin=stdin,
        time_limit_s=time_limit_s,
        memory_limit_mb=memory_limit_mb,
        output_limit_bytes=output_limit_bytes,
    )


def output_limit_for(output_limit_bytes: int, expected_bytes: int) -> int:
    """The stdout/stderr cap of a run: the judge's, raised for a large expected output."""
    return max(output_limit_bytes, 2 * expected_bytes + _OUTPUT_HEADROOM_BYTES)


def ran_out_of_time(result: ExecResult) -> bool:
    """A time limit: the backend's flag, or death by the CPU-seconds rlimit."""
    return result.timed_out or result.exit_code in (-_SIGXCPU, 128 + _SIGXCPU)


def split_report(stream: str, nonce: str) -> tuple[str, dict | None]:
    """(the stream without the harness's report line, the report) — the LAST `NONCE {json}` line."""
    marker = f"\n{nonce} "
    at = stream.rfind(marker)
    if at < 0:
        return stream, None
    end = stream.find("\n", at + len(marker))
    end = len(stream) if end < 0 else end
    try:
        record = json.loads(stream[at + len(marker) : end])
    except ValueError:
        return stream, None
    rest = stream[:at] + stream[end + 1 :]
    return rest, record if isinstance(record, dict) else None


def exit_detail(exit_code: int | None) -> str:
    """Why a run that reported nothing ended: its signal or exit code (0: it ended too early)."""
    if exit_code is None:
        return "the program was killed"
    if exit_code == 0:
        return "the program ended before the test finished (did it call exit()?)"
    if exit_code < 0 or exit_code > 128:
        signal_number = -exit_code if exit_code < 0 else exit_code - 128
        return f"the program was killed by signal {_SIGNALS.get(signal_number, signal_number)}"
    return f"the program exited with code {exit_code}"

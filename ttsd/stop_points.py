"""Named points where a process can be made to stop itself, for the kill test only.

With `TTSD_STOP_AT=<name>` in the environment, the first time a process reaches `stop_point(name)`
it sends itself SIGSTOP; tests/test_reliability_kill.py sees the stopped process (state `T` in
/proc/<pid>/stat) and SIGKILLs its group at exactly that moment. Used only for moments too short to
hit by polling the run directory's files (a few microseconds between two writes). Without the
variable (always, outside that test) `stop_point` does nothing.

    attempts-written   ttsd.methods.run_loop.run_steps: a step's attempts are in attempts.jsonl, its step record is not
    step-recorded      ttsd.methods.run_loop.run_steps: the step record is in steps.jsonl, the summary not yet rewritten
    between-runs       ttsd.bench.run_bench: a run has finished (summary written), the next has not started
"""

from __future__ import annotations

import os
import signal

ENV = "TTSD_STOP_AT"
POINTS = ("attempts-written", "step-recorded", "between-runs")
_reached: set[str] = set()


def stop_point(name: str) -> None:
    if name not in POINTS:
        raise ValueError(f"unknown stop point {name!r}")
    if name in _reached or name not in os.environ.get(ENV, "").split(","):
        return
    _reached.add(name)
    os.kill(os.getpid(), signal.SIGSTOP)

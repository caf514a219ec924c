"""A real `ttsd bench` process group killed with SIGKILL at five moments, each followed by a rerun of
the same command: nothing is lost or counted twice, and the finished runs are the ones an
uninterrupted bench makes (best-of-k's and sdpo's responses, attempt for attempt).

The moments, in the order one bench directory goes through them (runs: A = best-of-k, then B = sdpo,
budget 4 in batches of 2, so two steps each; `--pool 0`: best-of-k as seeded runs, not a pool):
  1. start-up        A's config.json exists, no attempt yet (polled: model loading takes seconds)
  2. step recorded   A's step 0 record is written, its summary not yet (stop point `step-recorded`)
  3. attempts written  A's step 1 attempts are written, its step record not (stop point `attempts-written`)
  4. between runs    A finished, B not started (stop point `between-runs`)
  5. mid-sampling    B's step 0 summary is written and step 1 is sampling (polled: sampling takes seconds)
Stop points (ttsd.stop_points) serve the moments that last microseconds; the process stops itself
there and is killed while stopped, which is the same as a kill landing at that instant.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import REPO
from ttsd.bench import load_summaries, run_state

PROBLEM = "sum-two-numbers"
BUDGET, BATCH = 4, 2
DEADLINE_S = 240  # per process: a stuck bench fails the test instead of hanging it


def _command(tiny_model_dir: Path, out: Path, extra: tuple[str, ...] = ()) -> list[str]:
    return [
        sys.executable, "-m", "ttsd", "bench", "--split", PROBLEM, "--methods", "best-of-k,sdpo", "--seeds", "1",
        "--model", str(tiny_model_dir), "--backend", "hf", "--budget", str(BUDGET), "--batch-size", str(BATCH),
        "--max-tokens", "24", "--learning-rate", "0.01", "--lora-rank", "4", "--pool", "0", "--out", str(out), *extra,
    ]


def _start(tiny_model_dir: Path, out: Path, stop_at: str = "", extra: tuple[str, ...] = ()) -> subprocess.Popen:
    """`ttsd bench` in a session (and process group) of its own; its output goes to OUT.<n>.log."""
    env = {**os.environ, "TTSD_STOP_AT": stop_at}
    log = out.with_name(f"{out.name}.{len(list(out.parent.glob(out.name + '.*.log')))}.log")
    with log.open("w") as handle:
        process = subprocess.Popen(_command(tiny_model_dir, out, extra), cwd=REPO, env=env, start_new_session=True,
                                   stdout=handle, stderr=subprocess.STDOUT, text=True)
    process.log = log
    return process


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _summary(run: Path) -> dict | None:
    try:
        return json.loads((run / "summary.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):  # not there yet, or caught mid-replace
        return None


def _stopped(process: subprocess.Popen) -> bool:
    try:
        state = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state == "T"


def _kill_when(process: subprocess.Popen, moment) -> None:
    """SIGKILL the process group as soon as `moment()` is true (polled every 5 ms)."""
    deadline = time.monotonic() + DEADLINE_S
    while not moment():
        assert process.poll() is None, f"the bench ended before the moment:\n{process.log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, "the moment never came"
        time.sleep(0.005)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def _finish(tiny_model_dir: Path, out: Path, extra: tuple[str, ...] = ()) -> str:
    done = subprocess.run(_command(tiny_model_dir, out, extra), cwd=REPO, capture_output=True, text=True, timeout=DEADLINE_S)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return " ".join(done.stdout.split())


def test_sigkill_at_every_moment_loses_and_doubles_nothing(tiny_model_dir, tmp_path):
    reference_dir, bench = tmp_path / "reference", tmp_path / "bench"
    reference = _start(tiny_model_dir, reference_dir)  # alongside the kills: the same work, never interrupted
    a = bench / "runs" / PROBLEM / "best-of-k" / "seed-0"
    b = bench / "runs" / PROBLEM / "sdpo" / "seed-0"

    # 1. start-up: the run exists, its model is loading
    process = _start(tiny_model_dir, bench)
    _kill_when(process, lambda: (a / "config.json").exists() and not _lines(a / "attempts.jsonl"))
    assert run_state(a) == "partial"

    # 2. right after a step record, before the summary is rewritten
    process = _start(tiny_model_dir, bench, "step-recorded")
    _kill_when(process, lambda: _stopped(process))
    assert len(_lines(a / "steps.jsonl")) == 1 and len(_lines(a / "attempts.jsonl")) == BATCH
    assert run_state(a) == "partial"

    # 3. right after a batch of attempts is written, before its step record
    process = _start(tiny_model_dir, bench, "attempts-written")
    _kill_when(process, lambda: _stopped(process))
    assert len(_lines(a / "steps.jsonl")) == 1 and len(_lines(a / "attempts.jsonl")) == 2 * BATCH
    assert not (_summary(a) or {}).get("finished") and run_state(a) == "partial"

    # 4. between runs: A finished, B not begun
    process = _start(tiny_model_dir, bench, "between-runs")
    _kill_when(process, lambda: _stopped(process))
    assert run_state(a) == "done" and run_state(b) == "pending"

    # 5. mid-sampling: B's first step is recorded, its second is being sampled
    process = _start(tiny_model_dir, bench)
    _kill_when(process, lambda: (_summary(b) or {}).get("attempts_used") == BATCH)
    assert len(_lines(b / "attempts.jsonl")) == BATCH, "the kill came after the step's attempts were written"
    assert run_state(b) == "partial"

    assert re.search(r"\b1 runs done, (0 pools drawn, )?1 already finished, 0 failed", _finish(tiny_model_dir, bench))
    assert reference.wait(timeout=DEADLINE_S) == 0, reference.log.read_text()[-3000:]

    summaries = load_summaries(bench)
    assert {key.method for key in summaries} == {"best-of-k", "sdpo"}
    for method in ("best-of-k", "sdpo"):
        run, ref = (d / "runs" / PROBLEM / method / "seed-0" for d in (bench, reference_dir))
        attempts, steps = _lines(run / "attempts.jsonl"), _lines(run / "steps.jsonl")
        summary = _summary(run)
        expected = summary["discovery_k"] if summary["discovered"] else BUDGET
        assert [x["k"] for x in attempts] == list(range(1, expected + 1)), method
        assert [s["step"] for s in steps] == list(range(len(steps))) and steps[-1]["attempts"] == expected, method
        assert summary["finished"] and summary["attempts_used"] == expected, method
        assert [x["response"] for x in attempts] == [x["response"] for x in _lines(ref / "attempts.jsonl")], method
        assert [x["verdict"] for x in attempts] == [x["verdict"] for x in _lines(ref / "attempts.jsonl")], method


def test_sigkill_of_a_concurrent_bench_resumes_every_run_exactly(tiny_model_dir, tmp_path):
    """`--concurrent 2`: both runs share one engine and are killed together, mid-way through their
    steps, twice; the rerun finishes both with the attempts of the one-at-a-time bench."""
    exact = ("--dtype", "float32")  # the same numbers whatever the batch's shape
    concurrent = ("--concurrent", "2", *exact)
    reference_dir, bench = tmp_path / "reference", tmp_path / "bench"
    reference = _start(tiny_model_dir, reference_dir, extra=exact)  # one run after another, never interrupted
    runs = [bench / "runs" / PROBLEM / method / "seed-0" for method in ("best-of-k", "sdpo")]

    # a step record is written (one run's), its summary not yet; the other run is mid-step
    process = _start(tiny_model_dir, bench, "step-recorded", concurrent)
    _kill_when(process, lambda: _stopped(process))
    assert sum(len(_lines(run / "steps.jsonl")) for run in runs) == 1
    assert all(run_state(run) == "partial" for run in runs)
    # a batch of attempts is written, its step record not
    process = _start(tiny_model_dir, bench, "attempts-written", concurrent)
    _kill_when(process, lambda: _stopped(process))
    assert not any((_summary(run) or {}).get("finished") for run in runs)

    assert re.search(r"\b2 runs done, (0 pools drawn, )?0 already finished, 0 failed", _finish(tiny_model_dir, bench, concurrent))
    assert reference.wait(timeout=DEADLINE_S) == 0, reference.log.read_text()[-3000:]
    for run in runs:
        ref = reference_dir / run.relative_to(bench)
        attempts = _lines(run / "attempts.jsonl")
        summary = _summary(run)
        expected = summary["discovery_k"] if summary["discovered"] else BUDGET
        assert [x["k"] for x in attempts] == list(range(1, expected + 1)), run
        untimed = lambda s: {k: v for k, v in s.items() if not k.endswith("_s")}  # noqa: E731
        assert summary["finished"] and untimed(summary) == untimed(_summary(ref)), run
        for field in ("response", "verdict", "tests_passed"):
            assert [x[field] for x in attempts] == [x[field] for x in _lines(ref / "attempts.jsonl")], (run, field)
        assert [(s["step"], s["loss"]) for s in _lines(run / "steps.jsonl")] == [
            (s["step"], s["loss"]) for s in _lines(ref / "steps.jsonl")], run

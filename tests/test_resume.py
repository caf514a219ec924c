"""`ttsd solve --resume`: a run killed with SIGKILL mid-step continues after its last completed step
with the same random streams: no attempt lost or counted twice, and the same attempts as a run that
was never interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO


def _args(tiny_model_dir, out):
    return [sys.executable, "-m", "ttsd", "solve", "sum-two-numbers", "--model", str(tiny_model_dir), "--backend", "hf",
            "--budget", "6", "--batch-size", "2", "--max-tokens", "24", "--seed", "5", "--learning-rate", "0.01",
            "--lora-rank", "4", "--out", str(out)]


def _lines(path):
    return [json.loads(l) for l in path.read_text().splitlines()] if path.exists() else []


def test_sigkill_mid_step_then_resume(tiny_model_dir, tmp_path):
    reference = subprocess.run(_args(tiny_model_dir, tmp_path / "ref"), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert reference.returncode == 1, reference.stderr[-2000:]

    run = tmp_path / "run"
    process = subprocess.Popen(_args(tiny_model_dir, run), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while len(_lines(run / "steps.jsonl")) < 1 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert len(_lines(run / "steps.jsonl")) < 3, "the run finished before it could be killed"

    resumed = subprocess.run([sys.executable, "-m", "ttsd", "solve", "--resume", str(run)], cwd=REPO,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 1, resumed.stderr[-2000:]
    attempts = _lines(run / "attempts.jsonl")
    assert [a["k"] for a in attempts] == [1, 2, 3, 4, 5, 6]
    assert [a["step"] for a in attempts] == [0, 0, 1, 1, 2, 2]
    assert [s["step"] for s in _lines(run / "steps.jsonl")] == [0, 1, 2]
    assert [a["response"] for a in attempts] == [a["response"] for a in _lines(tmp_path / "ref" / "attempts.jsonl")]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["attempts_used"] == 6 and summary["finished"]
    # the same learning too: two updates, and none on the budget's last batch (it would be wasted)
    steps, reference_steps = _lines(run / "steps.jsonl"), _lines(tmp_path / "ref" / "steps.jsonl")
    assert [s["loss"] is None for s in reference_steps] == [False, False, True]
    assert steps[2]["loss"] is None
    assert [s["loss"] for s in steps[:2]] == pytest.approx([s["loss"] for s in reference_steps[:2]], rel=1e-5)
    assert [s["trained_tokens"] for s in steps] == [s["trained_tokens"] for s in reference_steps]

"""`ttsd solve`: exit codes, config file + overrides, the resolved config saved with the run."""

from __future__ import annotations

import json
import re
import os
import subprocess
import sys

from tests.conftest import REPO


def _ttsd(*args, cwd=None):
    # a wide terminal, so the live table's headers (sdpo has nine columns) are not cut
    env = {**os.environ, "COLUMNS": "250"}
    return subprocess.run([sys.executable, "-m", "ttsd", "solve", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300, env=env)


def test_bad_problem_exits_2_without_traceback(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    result = _ttsd(bad, "--out", tmp_path / "run")
    assert result.returncode == 2 and "Traceback" not in result.stderr and "error" in result.stderr


def test_bad_option_value_exits_2(tmp_path):
    result = _ttsd("sum-two-numbers", "--budget", "zero", "--out", tmp_path / "run")
    assert result.returncode == 2 and "budget" in result.stderr and "Traceback" not in result.stderr


def test_config_file_with_override_runs_and_saves_resolved_config(tiny_model_dir, tmp_path):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"model": str(tiny_model_dir), "backend": "hf", "budget": 8, "batch_size": 2,
                                  "max_tokens": 16, "method": "best-of-k"}))
    result = _ttsd("sum-two-numbers", "--config", config, "--budget", "2", "--out", tmp_path / "run", cwd=REPO)
    assert result.returncode == 1, result.stderr[-2000:]
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["config"]["budget"] == 2 and saved["config"]["batch_size"] == 2 and saved["versions"]["torch"]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["attempts_used"] == 2 and summary["discovered"] is False


VLLM_INFO = re.compile(r"\) INFO \d\d-\d\d \d\d:\d\d:\d\d \[")  # "(MainProcess pid=1) INFO 12-01 03:18:18 [model.py:733]"


def test_a_vllm_solve_keeps_the_terminal_quiet_and_logs_everything(tiny_model_dir, tmp_path):
    options = ["--model", tiny_model_dir, "--backend", "vllm", "--budget", "2", "--batch-size", "2", "--max-tokens", "8",
               "--max-model-len", "512"]
    quiet = _ttsd("sum-two-numbers", *options, "--out", tmp_path / "quiet", cwd=REPO)
    assert quiet.returncode == 1, quiet.stderr[-3000:]
    log = (tmp_path / "quiet" / "run.log").read_text()
    assert VLLM_INFO.search(log) and "FutureWarning" in log  # everything the engines said, timestamped
    assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} .*Loading weights", log, re.MULTILINE)
    terminal = quiet.stdout + quiet.stderr
    assert not VLLM_INFO.search(terminal) and "FutureWarning" not in terminal and "Loading weights" not in terminal
    assert "budget spent" in quiet.stderr and "teacher−student" in quiet.stderr  # the live table and the outcome

    verbose = _ttsd("sum-two-numbers", *options, "--out", tmp_path / "verbose", "--verbose", cwd=REPO)
    assert verbose.returncode == 1, verbose.stderr[-3000:]
    assert VLLM_INFO.search(verbose.stderr) and "FutureWarning" in verbose.stderr and "budget spent" in verbose.stderr
    assert VLLM_INFO.search((tmp_path / "verbose" / "run.log").read_text())

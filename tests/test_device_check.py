"""scripts/device-check --cpu: the GPU check's every section, run at tiny sizes on the CPU so it
cannot rot between the rare sessions that have a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

SECTIONS = {"env", "tests", "solve", "sampler_speed", "memory", "solve_speed"}


def _positive_numbers(value, key_part: str) -> list[float]:
    """Every number > 0 stored under a key containing key_part, anywhere in a JSON value."""
    found = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key_part in key.lower() and isinstance(item, (int, float)) and not isinstance(item, bool) and item > 0:
                found.append(item)
            found += _positive_numbers(item, key_part)
    elif isinstance(value, list):
        for item in value:
            found += _positive_numbers(item, key_part)
    return found


@pytest.mark.slow
def test_device_check_on_cpu_fills_every_section(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(REPO / "scripts" / "device-check"), "--cpu", "--out", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=1500)
    report = json.loads((tmp_path / "device-check.json").read_text())
    sections = report["sections"]
    assert set(sections) == SECTIONS
    failed = {name: (entry.get("error"), entry.get("log_tail", "")[-1500:])
              for name, entry in sections.items() if entry["status"] != "ok"}
    assert not failed, failed
    assert done.returncode == 0, done.stderr[-3000:]

    assert report["machine"]["torch"] and report["machine"]["pydantic"]
    tests = sections["tests"]["result"]
    assert tests["passed"] >= 10 and tests["failed"] == 0 and tests["cpu_cases"] >= 10

    solve = sections["solve"]["result"]
    assert solve["exit_code"] in (0, 1) and solve["missing_files"] == []
    assert solve["summary"]["finished"] and solve["attempts"] == solve["summary"]["attempts_used"] > 0
    assert solve["device"] == "cpu"

    speed = sections["sampler_speed"]["result"]
    assert speed["bandwidth_limit_gbs"] > 0 and speed["bandwidth_source"]
    paths = {row["path"] for row in speed["rows"]}
    assert paths == {"generate", "static"}
    for row in speed["rows"]:
        assert row["decode_tokens_per_s"] > 0 and 0 < row["fraction_of_limit"] < 1 and row["limit_tokens_per_s"] > 0

    assert _positive_numbers(sections["memory"]["result"]["memory"], "peak"), sections["memory"]

    solve_speed = sections["solve_speed"]["result"]
    per_attempt = solve_speed["seconds_per_attempt"]
    assert per_attempt["sdpo"]["total"] > 0 and per_attempt["best-of-k"]["total"] > 0 and solve_speed["ratio"] > 0
    assert per_attempt["sdpo"]["train"] > 0 and per_attempt["best-of-k"]["train"] == 0

    table = (tmp_path / "device-check.md").read_text()
    assert all(f"| {name} | ok |" in table for name in SECTIONS)
    assert table in done.stdout  # printed at the end

"""scripts/device-check --cpu: the GPU check's every section, run at tiny sizes on the CPU so it
cannot rot between the rare sessions that have a GPU."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

spec = importlib.util.spec_from_file_location("device_check", REPO / "scripts" / "device_check.py")
device_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(device_check)

SECTIONS = {"env", "tests", "solve", "sampler_speed", "memory", "solve_speed", "concurrency"}


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

    for row in speed["rows"]:  # both limits, from the bytes a step reads; the KV cache makes the second lower
        assert row["weights_limit_tokens_per_s"] > row["limit_tokens_per_s"] > 0
        assert row["first_call_tokens_per_s"] > 0 and row["read_bytes_per_step"]["kv_cache"] > 0
    assert report["machine"]["sandbox_missing"] == []

    memory = sections["memory"]["result"]["memory"]
    assert _positive_numbers(memory, "peak"), sections["memory"]
    assert [row["response_tokens"] for row in memory["rows"]] == [64, 32]  # in the order asked
    assert memory["fits"]["estimate"]["longest_response_tokens"] > 0 and memory["fits"]["corrected"]["step_scale"] > 0

    solve_speed = sections["solve_speed"]["result"]
    per_attempt = solve_speed["seconds_per_attempt"]
    assert per_attempt["sdpo"]["total"] > 0 and per_attempt["best-of-k"]["total"] > 0 and solve_speed["ratio"] > 0
    assert per_attempt["sdpo"]["train"] > 0 and per_attempt["best-of-k"]["train"] == 0

    concurrency = sections["concurrency"]["result"]
    assert [row["R"] for row in concurrency["rows"]] == [1, 2]
    for row in concurrency["rows"]:  # the same fixed bench at each R
        assert row["attempts"] == 2 * 4 and row["tokens_per_s"] > 0 and row["attempts_per_s"] > 0
    assert concurrency["rows"][1]["mean_batch"] > concurrency["rows"][0]["mean_batch"] == 1  # R = 2 batched two runs
    assert concurrency["ratio"]["attempts_per_s"] > 0 and len(concurrency["table"]) == 4

    table = (tmp_path / "device-check.md").read_text()
    assert all(f"| {name} | ok |" in table for name in SECTIONS)
    assert table in done.stdout  # printed at the end


def _check(tmp_path):
    return device_check.Check(argparse.Namespace(cpu=True, out=str(tmp_path), deadline_s=60.0))


def test_the_solve_sections_say_the_sandbox_is_unavailable_before_running(tmp_path):
    """Where the env section found prlimit/setpriv missing, the solve rows name that, not a crash."""
    check = _check(tmp_path)
    check.report["machine"] = {"sandbox_missing": ["`prlimit` (util-linux) is missing: apt-get install util-linux"]}
    for section in (device_check.section_solve, device_check.section_solve_speed, device_check.section_concurrency):
        with pytest.raises(device_check.SectionFailed, match=r"^sandbox unavailable: `prlimit` \(util-linux\) is missing"):
            section(check, 60)
    check.report["machine"] = {"sandbox_missing": []}
    assert check.sandbox_problem(60) is None
    del check.report["machine"]  # the env section did not run: asked directly
    assert check.sandbox_problem(60) is None


def test_a_fallback_to_generate_is_found_in_the_log_with_its_reason():
    line = ("2026-12-02 00:00:00 WARNING ttsd.engine.hf_sampler: ttsd: the fast HF decode path is off "
            "(RuntimeError: CUDA error: operation not permitted when stream is capturing); sampling with transformers generate")
    assert device_check._fallback_reason("before\n" + line + "\nafter") == (
        "RuntimeError: CUDA error: operation not permitted when stream is capturing")
    assert device_check._fallback_reason("no warning here") is None


def test_a_benchmark_cut_short_keeps_the_rows_it_wrote(tmp_path):
    check = _check(tmp_path)
    out = tmp_path / "rows.json"
    slow = f"import json, time; open({str(out)!r}, 'w').write(json.dumps({{'rows': [{{'a': 1}}]}})); time.sleep(60)"
    with pytest.raises(device_check.SectionFailed, match=r"timed out after 3 s \(1 rows finished\)") as failure:
        device_check._run_keeping_rows(check, ["-c", slow], 3, "slow", out)
    assert failure.value.result["result"]["rows"] == [{"a": 1}]

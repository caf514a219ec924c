"""The supervisor both sandboxes share: one rlimit rule (checked inside both backends), file names
kept inside the work dir, output collection that stops at exit, deadline or overflow."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from ttsd.sandbox import Job
from ttsd.sandbox.docker import DockerSandbox
from ttsd.sandbox.local import LocalSandbox
from ttsd.sandbox.supervisor import collect_output, cpu_limit_s, rlimits, safe_relative

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("time_limit_s, expected", [(0.5, 2), (1.0, 2), (2.5, 4), (6.0, 7), (6.01, 8)])
def test_cpu_limit_is_a_whole_second_past_the_wall_clock(time_limit_s, expected):
    assert cpu_limit_s(time_limit_s) == expected
    assert time_limit_s + 1 <= cpu_limit_s(time_limit_s) < time_limit_s + 2


def test_rlimits_cap_processes_only_where_asked():
    limits = rlimits(2.5, memory_limit_mb=512, file_size_limit_mb=8, max_open_files=64)
    assert limits == {"cpu": (4, 5), "as": (512 << 20,) * 2, "fsize": (8 << 20,) * 2, "nofile": (64, 64), "core": (0, 0)}
    assert rlimits(2.5, 512, 8, 64, max_processes=32)["nproc"] == (32, 32)


@pytest.mark.parametrize("name, expected", [("a.py", "a.py"), ("./d/x.txt", "d/x.txt"), ("d\\y.txt", "d/y.txt")])
def test_safe_relative_keeps_names_inside(name, expected):
    assert safe_relative(name) == expected


@pytest.mark.parametrize("name", ["../evil.py", "/etc/evil.py", "a/../../evil.py", "", "."])
def test_safe_relative_refuses_escapes(name):
    with pytest.raises(ValueError, match="relative path inside the work dir"):
        safe_relative(name)


RLIMIT_PROBE = (
    "import resource\n"
    "print([resource.getrlimit(getattr(resource, 'RLIMIT_' + n)) for n in ('CPU', 'AS', 'FSIZE', 'NOFILE', 'CORE')])\n"
)


@pytest.mark.docker
def test_local_and_docker_programs_run_under_the_same_rlimits():
    job = Job(files={"probe.py": RLIMIT_PROBE}, argv=["python3", "probe.py"], time_limit_s=2.5, memory_limit_mb=512)
    local = LocalSandbox()
    docker = DockerSandbox(pool_size=0)
    try:
        seen = {sandbox.name: sandbox.run(job) for sandbox in (local, docker)}
    finally:
        docker.close()
    assert seen["local"].exit_code == 0 and seen["docker"].exit_code == 0, seen
    assert seen["local"].stdout == seen["docker"].stdout
    assert seen["local"].stdout.startswith(f"[({cpu_limit_s(2.5)}, {cpu_limit_s(2.5) + 1}), ({512 << 20}, {512 << 20})")


def _python(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)


def test_collect_output_stops_at_exit_and_keeps_both_streams():
    proc = _python("import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)")
    exits = []
    collected = collect_output(proc, time.monotonic() + 30, 1 << 20, on_exit=lambda: exits.append(proc.pid))
    assert (collected.stdout, collected.stderr, collected.timed_out, collected.truncated) == (b"out\n", b"err\n", False, False)
    assert exits == [proc.pid]  # once, at the exit
    assert collected.result(proc.wait())["exit_code"] == 3


def test_collect_output_drains_for_a_while_when_a_leftover_holds_the_pipes():
    # The program exits at once; its child keeps stdout open for 30 s.
    proc = _python("import os, time\nprint('bye', flush=True)\nif os.fork() == 0:\n    time.sleep(30)\n")
    start = time.monotonic()
    try:
        collected = collect_output(proc, start + 20, 1 << 20, drain_s=0.2)
        assert time.monotonic() - start < 5 and not collected.timed_out and collected.stdout == b"bye\n"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the program's own process group: it and its child
        proc.wait()


def test_collect_output_times_out_and_truncates():
    proc = _python("import time; time.sleep(30)")
    collected = collect_output(proc, time.monotonic() + 0.5, 1 << 20)
    proc.kill()
    assert collected.timed_out and collected.result(proc.wait())["exit_code"] is None
    proc = _python("import sys; sys.stdout.write('x' * 100000); sys.stdout.flush()")
    collected = collect_output(proc, time.monotonic() + 30, 1000)
    proc.kill()
    proc.wait()
    fields = collected.result(0)
    assert collected.truncated and fields["output_truncated"] and len(fields["stdout"]) == 1000 and fields["exit_code"] is None


def test_a_cpu_rlimit_kill_counts_as_a_timeout():
    proc = _python("pass")
    collected = collect_output(proc, time.monotonic() + 30, 1000)
    proc.wait()
    assert collected.result(-signal.SIGXCPU)["timed_out"] is True
    assert collected.result(-signal.SIGKILL)["timed_out"] is False

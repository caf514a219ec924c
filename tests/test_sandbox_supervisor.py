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
from ttsd.sandbox.supervisor import (
    WALL_BACKSTOP_FACTOR,
    collect_output,
    cpu_limit_s,
    rlimits,
    safe_relative,
    time_limit_hit,
    wall_limit_s,
)

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("time_limit_s, expected", [(0.2, 1), (1.0, 1), (2.5, 3), (6.0, 6), (6.01, 7)])
def test_the_cpu_rlimit_is_the_time_limit_rounded_up_to_a_whole_second(time_limit_s, expected):
    assert cpu_limit_s(time_limit_s) == expected


def test_the_wall_clock_backstop_is_a_multiple_of_the_cpu_time_limit():
    assert wall_limit_s(2.0) == WALL_BACKSTOP_FACTOR * 2.0 == 20.0


@pytest.mark.parametrize("wall_timed_out, exit_code, cpu_s, expected", [
    (False, -signal.SIGXCPU, None, "cpu"),  # the rlimit's signal
    (False, -signal.SIGKILL, 3.2, "cpu"),  # SIGXCPU ignored: the hard limit's SIGKILL, measured past the limit
    (True, None, 0.01, "wall"),  # waited, computed nothing
    (True, None, None, "wall"),
    (False, 0, 2.9, None),  # under the rounded-up limit (3 s) of a 2.5 s time limit
    (False, -signal.SIGKILL, None, None),  # a SIGKILL nobody can attribute to a limit
])
def test_which_time_limit_fired(wall_timed_out, exit_code, cpu_s, expected):
    assert time_limit_hit(wall_timed_out, exit_code, cpu_s, 2.5) == expected


def test_rlimits_cap_processes_only_where_asked():
    limits = rlimits(2.5, memory_limit_mb=512, file_size_limit_mb=8, max_open_files=64)
    assert limits == {"cpu": (3, 4), "as": (512 << 20,) * 2, "fsize": (8 << 20,) * 2, "nofile": (64, 64), "core": (0, 0)}
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
    assert collected.result(-signal.SIGXCPU)["time_limit_hit"] == "cpu"
    assert collected.result(-signal.SIGKILL)["timed_out"] is False


# A correct program that computes for ~1 s of CPU time (measured by the program itself, so the same
# on every machine) before answering.
ONE_CPU_SECOND = (
    "import time\n"
    "while time.process_time() < 1.0:\n"
    "    pass\n"
    "a, b = map(int, input().split())\n"
    "print(a + b)\n"
)
CONCURRENT_CHECKS = 16


@pytest.mark.docker
@pytest.mark.timeout(600)
@pytest.mark.parametrize("backend", ["local", "docker"])
def test_a_correct_program_is_accepted_by_16_concurrent_checks(backend):
    """The time limit is CPU time: 16 judges sharing 2 cores (CI) take ~8 s of wall clock each for 1 s
    of CPU, past the 4 s limit (a wall-clock limit judged them time_limit), and still accept; only
    the wall-clock backstop (10x: 40 s) is wall time. (Docker's containers share one cgroup's CPU
    weight against everything else on the host: under a heavy load from outside the test they get
    less than their share and can still meet the backstop.)"""
    from concurrent.futures import ThreadPoolExecutor

    from ttsd.judge import Judge, Verdict
    from ttsd.problems import Problem, TestCase

    problem = Problem(id="one-cpu-second", statement="a + b", tests=[TestCase(input="2 3\n", output="5\n")], time_limit_s=4)
    sandbox = LocalSandbox() if backend == "local" else DockerSandbox(pool_size=0)
    response = f"```python\n{ONE_CPU_SECOND}```"
    try:
        with ThreadPoolExecutor(CONCURRENT_CHECKS) as pool:
            judges = [Judge(sandbox, max_workers=1) for _ in range(CONCURRENT_CHECKS)]
            judgements = list(pool.map(lambda judge: judge.judge(problem, response), judges))
    finally:
        sandbox.close()
    assert [j.verdict for j in judgements] == [Verdict.accepted] * CONCURRENT_CHECKS, [j.feedback for j in judgements]

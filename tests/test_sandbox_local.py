"""The local sandbox (bubblewrap + rlimits + a dedicated uid), and the bad-input suite that every
backend must pass (tests/test_sandbox_docker.py runs the same `BAD_INPUT` cases on Docker).

Every bad-input case checks three things: the right ExecResult flags, an end well within the limit
plus a few seconds (a correctness bound, not a speed claim), and nothing left behind: no process
whose command line carries the job's unique token, no file outside the sandbox.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from ttsd.sandbox import ExecResult, Job, SandboxUnavailable, make_sandbox
from ttsd.sandbox.local import DEFAULT_UID_BASE, LocalSandbox
from ttsd.sandbox.supervisor import wall_limit_s

pytestmark = pytest.mark.timeout(120)


# ---------------------------------------------------------------------------------------------
# The bad-input suite, shared with the Docker tests.


@dataclass
class Ctx:
    """What a case may use: a unique token (in the program's file name, so in its command line),
    a world-readable secret file outside the sandbox, and a listening host port."""

    token: str
    secret_path: Path
    secret: str
    port: int


@dataclass
class Case:
    name: str
    program: Callable[[Ctx], str]
    check: Callable[[ExecResult, Ctx], None]
    time_limit_s: float = 3.0
    settle_s: float = 0.0  # wait this long before looking for leftovers (the daemon's nap)


def _fork_limit_program(ctx: Ctx) -> str:
    return """
import os, time
n = 0
try:
    while n < 5000:
        if os.fork() == 0:
            time.sleep(60)
            os._exit(0)
        n += 1
except OSError as e:
    print("fork failed after", n, type(e).__name__)
"""


def _check_fork_limit(r: ExecResult, ctx: Ctx) -> None:
    assert "fork failed after" in r.stdout, r
    forked = int(r.stdout.split("after")[1].split()[0])
    assert forked < 200, f"the process limit did not apply: {forked} forks"
    assert r.exit_code == 0 and not r.timed_out


def _check_timed_out(r: ExecResult, ctx: Ctx) -> None:
    assert r.timed_out, r
    assert r.exit_code is None and r.time_limit_hit == "wall"


def _check_cpu_time_limit(r: ExecResult, ctx: Ctx) -> None:
    assert r.timed_out and r.time_limit_hit == "cpu", r


def _check_any_time_limit(r: ExecResult, ctx: Ctx) -> None:
    """Many processes: the CPU rlimit (per process) or the backstop, whichever comes first."""
    assert r.timed_out and r.time_limit_hit in ("cpu", "wall"), r


def _check_memory(r: ExecResult, ctx: Ctx) -> None:
    assert r.memory_exceeded, r
    assert r.exit_code != 0 and not r.timed_out
    assert "allocated" not in r.stdout


def _check_disk_error(r: ExecResult, ctx: Ctx) -> None:
    assert r.exit_code not in (0, None), r
    assert "wrote everything" not in r.stdout
    assert "File too large" in r.stderr or "No space left" in r.stderr or "Disk quota" in r.stderr, r.stderr


def _network_program(ctx: Ctx) -> str:
    return f"""
import socket
for host in ("127.0.0.1", "1.1.1.1", "8.8.8.8"):
    for port in ({ctx.port}, 80, 53):
        try:
            socket.create_connection((host, port), timeout=1).close()
            print("CONNECTED", host, port)
        except OSError as e:
            print("blocked", host, port, type(e).__name__)
"""


def _check_network(r: ExecResult, ctx: Ctx) -> None:
    assert r.exit_code == 0, r
    assert "CONNECTED" not in r.stdout, r.stdout
    assert r.stdout.count("blocked") == 9


def _check_output_cap(r: ExecResult, ctx: Ctx) -> None:
    assert r.output_truncated, r
    assert r.exit_code is None and not r.timed_out
    assert len(r.stdout.encode()) <= 1 << 20
    assert r.stdout.startswith("x" * 1000)


def _daemon_program(ctx: Ctx) -> str:
    return """
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        for fd in (0, 1, 2):
            os.close(fd)
        time.sleep(1.5)
        open("/tmp/escaped", "w").write("still alive")
        time.sleep(60)
    os._exit(0)
print("parent done")
"""


def _check_daemon(r: ExecResult, ctx: Ctx) -> None:
    assert r.exit_code == 0 and r.stdout == "parent done\n", r
    assert not r.timed_out


def _host_files_program(ctx: Ctx) -> str:
    return f"""
import os
for path in ({str(ctx.secret_path)!r}, "/etc/shadow", "/root/.bash_history", "/work/main/pyproject.toml"):
    try:
        print("READ", path, open(path).read()[:200])
    except OSError as e:
        print("denied", path, type(e).__name__)
print("LISTING", sorted(os.listdir(".")))
"""


def _check_host_files(r: ExecResult, ctx: Ctx) -> None:
    assert r.exit_code == 0, r
    assert ctx.secret not in r.stdout
    assert "READ" not in r.stdout, r.stdout
    assert r.stdout.count("denied") == 4
    assert f"LISTING ['main_{ctx.token}.py']" in r.stdout, r.stdout


BAD_INPUT = [
    Case("fork_limit", _fork_limit_program, _check_fork_limit, time_limit_s=20),
    Case(
        "fork_bomb",
        lambda ctx: "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
        _check_any_time_limit,
        time_limit_s=1,
    ),
    Case(
        "alloc_10gb",
        lambda ctx: "x = bytearray(10 * 1024**3)\nprint('allocated', len(x))\n",
        _check_memory,
        time_limit_s=20,
    ),
    Case("busy_loop", lambda ctx: "while True:\n    pass\n", _check_cpu_time_limit, time_limit_s=2),
    Case("sleep_forever", lambda ctx: "import time\ntime.sleep(10**6)\n", _check_timed_out, time_limit_s=0.5),
    Case(
        "huge_file",
        lambda ctx: "chunk = b'x' * (1 << 20)\nwith open('big', 'wb') as f:\n"
        "    for _ in range(10 * 1024):\n        f.write(chunk)\nprint('wrote everything')\n",
        _check_disk_error,
        time_limit_s=20,
    ),
    Case(
        "many_32mb_files",
        lambda ctx: "chunk = b'x' * (32 << 20)\nfor i in range(300):\n"
        "    with open(f'f{i}', 'wb') as f:\n        f.write(chunk)\nprint('wrote everything')\n",
        _check_disk_error,
        time_limit_s=20,
    ),
    Case("network", _network_program, _check_network, time_limit_s=20),
    Case(
        "stdout_100mb",
        lambda ctx: "import sys\nblock = 'x' * (1 << 20)\nfor _ in range(100):\n    sys.stdout.write(block)\n",
        _check_output_cap,
        time_limit_s=20,
    ),
    Case("setsid_daemon", _daemon_program, _check_daemon, time_limit_s=5, settle_s=2.5),
    Case("host_files", _host_files_program, _check_host_files, time_limit_s=10),
]


@pytest.fixture
def ctx(tmp_path_factory):
    token = uuid.uuid4().hex[:12]
    secret_dir = Path("/tmp") / f"ttsd-test-secret-{token}"  # world-readable on purpose
    secret_dir.mkdir(mode=0o755)
    os.chmod(secret_dir, 0o755)
    secret_path = secret_dir / "hidden_tests.json"
    secret = f"HIDDEN-TEST-{token}"
    secret_path.write_text(secret)
    os.chmod(secret_path, 0o644)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.1)
    accepted: list = []
    stop = threading.Event()

    def accept_loop():
        while not stop.is_set():
            try:
                accepted.append(server.accept())
            except OSError:
                pass

    thread = threading.Thread(target=accept_loop, daemon=True)
    thread.start()
    yield Ctx(token=token, secret_path=secret_path, secret=secret, port=server.getsockname()[1])
    stop.set()
    thread.join()
    server.close()
    secret_path.unlink()
    secret_dir.rmdir()
    assert not accepted, "a sandboxed program connected to a host port"


def processes_with(token: str) -> list[psutil.Process]:
    """Live (non-zombie) host processes whose command line mentions `token`."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if any(token in part for part in proc.info["cmdline"] or []):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def assert_nothing_left(token: str, timeout_s: float = 3.0) -> None:
    deadline = time.monotonic() + timeout_s
    while (left := processes_with(token)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"processes left behind: {[p.info['cmdline'] for p in left]}"


def run_bad_input(sandbox, case: Case, ctx: Ctx) -> ExecResult:
    """Run one case, check its flags, its wall time and that it left nothing behind."""
    job = Job(
        files={f"main_{ctx.token}.py": case.program(ctx)},
        argv=["python3", f"main_{ctx.token}.py"],
        time_limit_s=case.time_limit_s,
        memory_limit_mb=512,
    )
    start = time.monotonic()
    result = sandbox.run(job)
    elapsed = time.monotonic() - start
    case.check(result, ctx)
    assert elapsed < wall_limit_s(case.time_limit_s) + 5, f"{case.name} took {elapsed:.1f}s"
    assert result.wall_s <= elapsed + 0.01
    time.sleep(case.settle_s)
    assert_nothing_left(ctx.token)
    assert not Path("/tmp/escaped").exists()
    assert not list(Path("/tmp").glob("ttsd-job-*")), "a job's files were left in /tmp"
    return result


# ---------------------------------------------------------------------------------------------
# The local backend.


@pytest.fixture(scope="module")
def local():
    sandbox = make_sandbox("local")
    assert sandbox.isolation == "bwrap", "bubblewrap must work on this machine (CI installs it)"
    yield sandbox
    sandbox.close()


@pytest.mark.parametrize("case", BAD_INPUT, ids=[c.name for c in BAD_INPUT])
def test_bad_input_local(local, case, ctx):
    run_bad_input(local, case, ctx)


def test_no_process_of_a_sandbox_uid_survives(local):
    """After bad jobs nothing runs under any of the dedicated uids (zombies awaiting init aside)."""
    if os.geteuid() != 0:
        pytest.skip("dedicated uids are used only when ttsd runs as root")
    local.run(Job(files={"a.py": _daemon_program(None)}, argv=["python3", "a.py"], time_limit_s=3))
    local.run(Job(argv=["sleep", "100"], time_limit_s=0.5))
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        alive = [
            p for p in psutil.process_iter(["uids", "status"])
            if DEFAULT_UID_BASE <= p.info["uids"].real < DEFAULT_UID_BASE + 4096
            and p.info["status"] != psutil.STATUS_ZOMBIE
        ]
        if not alive:
            break
        time.sleep(0.05)
    assert not alive


def test_stdin_stdout_stderr_and_exit_code(local):
    r = local.run(
        Job(
            files={"main.py": "import sys\nname = input()\nprint('hello', name)\n"
                   "print('dbg', file=sys.stderr)\nsys.exit(3)\n"},
            argv=["python3", "main.py"],
            stdin="wörld\nignored\n",
        )
    )
    assert r.stdout == "hello wörld\n"
    assert r.stderr == "dbg\n"
    assert r.exit_code == 3
    assert not (r.timed_out or r.memory_exceeded or r.output_truncated)
    assert 0 < r.wall_s < 5


def test_runtime_error_and_signal_exit_codes(local):
    r = local.run(Job(files={"m.py": "1/0\n"}, argv=["python3", "m.py"]))
    assert r.exit_code == 1 and "ZeroDivisionError" in r.stderr and not r.memory_exceeded
    r = local.run(Job(files={"m.py": "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n"},
                      argv=["python3", "m.py"]))
    assert r.exit_code == -11


def test_files_in_subdirectories_and_work_dir(local):
    r = local.run(
        Job(
            files={"main.py": "import os\nprint(os.getcwd())\nprint(open('data/in.txt').read())\n",
                   "data/in.txt": "payload"},
            argv=["python3", "main.py"],
        )
    )
    assert r.stdout == "/work\npayload\n", r


def test_file_names_cannot_escape_the_work_dir(local):
    for bad in ("../evil.py", "/etc/evil.py", "a/../../evil.py"):
        with pytest.raises(ValueError):
            local.run(Job(files={bad: "x"}, argv=["true"]))


def test_clean_environment_and_private_tmp(local, monkeypatch):
    monkeypatch.setenv("TTSD_HOST_SECRET", "s3cret")
    code = "import os\nprint(sorted(os.environ))\nprint(os.listdir('/tmp'))\nopen('/tmp/mine', 'w').write('x')\n"
    first = local.run(Job(files={"m.py": code}, argv=["python3", "m.py"]))
    second = local.run(Job(files={"m.py": code}, argv=["python3", "m.py"]))
    assert "TTSD_HOST_SECRET" not in first.stdout
    assert "PATH" in first.stdout
    assert first.stdout.splitlines()[1] == "[]" and second.stdout.splitlines()[1] == "[]"


def test_system_is_read_only(local):
    code = """
for path in ("/usr/evil", "/etc/evil", "/evil", "/dev/evil", "/proc/evil"):
    try:
        open(path, "w").write("x")
        print("WROTE", path)
    except OSError:
        print("refused", path)
"""
    r = local.run(Job(files={"m.py": code}, argv=["python3", "m.py"]))
    assert "WROTE" not in r.stdout and r.stdout.count("refused") == 5, r.stdout


def test_output_limit_on_stderr_and_exact_boundary(local):
    r = local.run(Job(files={"m.py": "import sys\nsys.stderr.write('e' * 5000)\n"},
                      argv=["python3", "m.py"], output_limit_bytes=1000))
    assert r.output_truncated and len(r.stderr) == 1000
    r = local.run(Job(files={"m.py": "import sys\nsys.stdout.write('o' * 1000)\n"},
                      argv=["python3", "m.py"], output_limit_bytes=1000))
    assert not r.output_truncated and r.stdout == "o" * 1000 and r.exit_code == 0


def test_program_closing_its_pipes_still_times_out(local):
    code = "import os, time\nos.close(1)\nos.close(2)\ntime.sleep(100)\n"
    r = local.run(Job(files={"m.py": code}, argv=["python3", "m.py"], time_limit_s=0.5))
    assert r.timed_out and r.exit_code is None and r.time_limit_hit == "wall" and r.wall_s < wall_limit_s(0.5) + 3


def test_concurrent_jobs_stay_separate(local):
    from concurrent.futures import ThreadPoolExecutor

    def job(i: int) -> ExecResult:
        code = f"import time, os\nopen('/tmp/id', 'w').write('{i}')\ntime.sleep(0.2)\n" \
               "print(open('/tmp/id').read(), input())\n"
        return local.run(Job(files={"m.py": code}, argv=["python3", "m.py"], stdin=f"in{i}\n"))

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(job, range(16)))
    for i, r in enumerate(results):
        assert r.stdout == f"{i} in{i}\n", r


def test_uids_are_unique_while_held():
    from ttsd.sandbox.local import _UidPool

    a, b = _UidPool(DEFAULT_UID_BASE + 5000, size=3), _UidPool(DEFAULT_UID_BASE + 5000, size=3)
    held = [a.acquire(), b.acquire(), a.acquire()]  # two pools stand for two ttsd processes
    assert len(set(held)) == 3
    with pytest.raises(SandboxUnavailable):
        b.acquire()
    a.release(held[0])
    assert b.acquire() == held[0]


def test_missing_bubblewrap_fails_or_falls_back_loudly(caplog):
    with pytest.raises(SandboxUnavailable, match="bwrap"):
        LocalSandbox(isolation="bwrap", bwrap="/nonexistent/bwrap")
    with caplog.at_level(logging.WARNING, logger="ttsd"):
        sandbox = LocalSandbox(isolation="auto", bwrap="/nonexistent/bwrap")
    assert sandbox.isolation == "rlimits"
    # a warning of logger "ttsd...": what a solve shows on the terminal (tests/test_logs.py)
    [record] = [r for r in caplog.records if r.name.startswith("ttsd") and r.levelno == logging.WARNING]
    warning = record.getMessage()
    assert "WITHOUT bubblewrap" in warning and "network" in warning and "host file" in warning


def test_missing_util_linux_tools_are_named(monkeypatch, tmp_path):
    """Without bubblewrap the local sandbox still needs prlimit (and setpriv as root): both are
    named, with how to get them, before anything runs (what `device-check` reports)."""
    from ttsd.sandbox import local

    assert local.missing_tools(as_root=True) == []  # this machine has util-linux
    monkeypatch.setattr(local, "SYSTEM_PATH", str(tmp_path))  # a PATH with neither tool
    assert [m.split()[0] for m in local.missing_tools(as_root=True)] == ["`prlimit`", "`setpriv`"]
    assert [m.split()[0] for m in local.missing_tools(as_root=False)] == ["`prlimit`"]
    with pytest.raises(SandboxUnavailable, match="prlimit.*apt-get install util-linux"):
        LocalSandbox(isolation="rlimits")


@pytest.fixture(scope="module")
def rlimits_only():
    return LocalSandbox(isolation="rlimits")


# Without namespaces the network and host files are exposed (that is what the warning says), and
# the disk is the host's: only the cases the rlimits must still handle run here.
RLIMIT_CASES = [c for c in BAD_INPUT if c.name in
                ("fork_limit", "fork_bomb", "alloc_10gb", "busy_loop", "sleep_forever", "huge_file",
                 "stdout_100mb", "setsid_daemon")]


@pytest.mark.parametrize("case", RLIMIT_CASES, ids=[c.name for c in RLIMIT_CASES])
def test_bad_input_rlimits_fallback(rlimits_only, case, ctx):
    if os.geteuid() != 0 and case.name in ("fork_limit", "fork_bomb", "setsid_daemon"):
        pytest.skip("without root there is no dedicated uid to limit or to clean up")
    run_bad_input(rlimits_only, case, ctx)

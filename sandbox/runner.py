"""ttsd's in-container job runner (baked into the sandbox image at /opt/ttsd/runner.py).

It is the container's pid 1 and reads one JSON job per line on stdin; for each it writes a fresh
work directory, runs the program under rlimits (its time limit is CPU time, measured over every
process it started) with a wall-clock backstop and an output cap, kills
every process the program left behind (`kill(-1)` spares only pid 1, i.e. this runner), wipes
/work, /tmp and /dev/shm, and writes one JSON result line on stdout. As pid 1 it cannot be killed
from inside the container, and being non-dumpable, programs running under the same uid cannot
ptrace it or read its memory or file descriptors. Standard library only.

The rlimits, the file names, the output collection and the result fields are the local sandbox's
(`ttsd/sandbox/supervisor.py`, which the image build copies beside this file as supervisor.py).
"""

import ctypes
import importlib.util
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time

WORK = "/work"
JOB_DIR = "/work/job"
PATH = "/usr/local/bin:/usr/bin:/bin"
PR_SET_DUMPABLE = 4


def load_supervisor():
    """ttsd/sandbox/supervisor.py, copied beside this file (`python3 -I` puts no script dir on sys.path)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "supervisor.py")
    spec = importlib.util.spec_from_file_location("ttsd_supervisor", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


supervisor = load_supervisor()


def make_undumpable():
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def wipe(directory):
    for entry in os.listdir(directory):
        path = os.path.join(directory, entry)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.unlink(path)
            except OSError:
                pass


def limits(job):
    """Set the job's rlimits in the child (a preexec_fn); the container's pids cgroup caps processes."""
    chosen = supervisor.rlimits(job["time_limit_s"], job["memory_limit_mb"], job["file_size_limit_mb"],
                                job["max_open_files"])

    def apply():
        for name, values in chosen.items():
            resource.setrlimit(getattr(resource, "RLIMIT_" + name.upper()), values)

    return apply


def oom_kills():
    """How many processes the container's memory cgroup has OOM-killed so far (v1 or v2)."""
    for path in ("/sys/fs/cgroup/memory/memory.oom_control", "/sys/fs/cgroup/memory.events"):
        try:
            with open(path) as f:
                for line in f:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
        except (OSError, ValueError):
            continue
    return 0


def kill_everything_else(proc):
    """SIGKILL every process but this one and reap them all, the program first (so that its status is
    its own); True when there was something to kill besides an exited program."""
    proc.poll()  # reap the program if it has exited: a zombie would count as something to kill
    try:
        os.kill(-1, signal.SIGKILL)
    except ProcessLookupError:
        found = False
    else:
        found = True
    proc.wait()
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:  # reap the orphans re-parented to us
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            time.sleep(0.001)
    return found


def run(job):
    start = time.monotonic()
    ooms_before = oom_kills()
    wipe(WORK)
    os.mkdir(JOB_DIR)
    for name, content in job["files"].items():
        path = os.path.join(JOB_DIR, supervisor.safe_relative(name))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(content)
    stdin_fd = supervisor.memfd("stdin", job["stdin"].encode())
    cpu_before = supervisor.children_cpu_s()  # as pid 1 the runner reaps every process of the job
    env = {"PATH": PATH, "HOME": JOB_DIR, "TMPDIR": "/tmp", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
    try:
        proc = subprocess.Popen(job["argv"], cwd=JOB_DIR, stdin=stdin_fd, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env, start_new_session=True,
                                preexec_fn=limits(job))
    except OSError as exc:
        return {"stderr": "%s: %s" % (type(exc).__name__, exc), "exit_code": 127,
                "wall_s": time.monotonic() - start, "leftovers": False}
    finally:
        os.close(stdin_fd)
    leftovers = False

    def on_exit():
        # The program is done: whatever still holds its pipes open is a leftover (a daemon); kill
        # it so the pipes reach EOF, keeping all output written so far.
        nonlocal leftovers
        leftovers = kill_everything_else(proc)

    deadline = start + supervisor.wall_limit_s(job["time_limit_s"])
    collected = supervisor.collect_output(proc, deadline, job["output_limit_bytes"], on_exit=on_exit)
    wall_s = time.monotonic() - start
    leftovers = kill_everything_else(proc) or leftovers
    cpu_s = supervisor.children_cpu_s() - cpu_before
    for stream in (proc.stdout, proc.stderr):
        stream.close()
    wipe(WORK)
    wipe("/tmp")
    if os.path.isdir("/dev/shm"):
        wipe("/dev/shm")
    result = collected.result(proc.returncode, cpu_s, job["time_limit_s"])
    result.update(
        wall_s=wall_s,
        leftovers=leftovers and not collected.killed,
        oom_kills=oom_kills() - ooms_before,
    )
    return result


def main():
    make_undumpable()
    out = sys.stdout.buffer
    for line in sys.stdin.buffer:
        if not line.strip():
            continue
        try:
            result = run(json.loads(line))
        except Exception as exc:  # a runner failure, reported so that the host recycles us
            result = {"runner_error": "%s: %s" % (type(exc).__name__, exc)}
        out.write(json.dumps(result).encode() + b"\n")
        out.flush()


if __name__ == "__main__":
    main()

"""ttsd's in-container job runner (baked into the sandbox image at /opt/ttsd/runner.py).

It is the container's pid 1 and reads one JSON job per line on stdin; for each it writes a fresh
work directory, runs the program under rlimits with a wall-clock kill and an output cap, kills
every process the program left behind (`kill(-1)` spares only pid 1, i.e. this runner), wipes
/work, /tmp and /dev/shm, and writes one JSON result line on stdout. As pid 1 it cannot be killed
from inside the container, and being non-dumpable, programs running under the same uid cannot
ptrace it or read its memory or file descriptors. Standard library only.
"""

import ctypes
import errno
import json
import os
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import time

WORK = "/work"
JOB_DIR = "/work/job"
PATH = "/usr/local/bin:/usr/bin:/bin"
PR_SET_DUMPABLE = 4


def make_undumpable():
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def safe_relative(name):
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts or ".." in parts or name.startswith("/"):
        raise ValueError("bad file name %r" % name)
    return os.path.join(*parts)


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
    def apply():
        cpu = int(job["time_limit_s"]) + 2
        mem = job["memory_limit_mb"] << 20
        fsize = job["file_size_limit_mb"] << 20
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        resource.setrlimit(resource.RLIMIT_NOFILE, (job["max_open_files"],) * 2)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

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


def kill_everything_else():
    """SIGKILL every process but this one; True when there was something to kill."""
    try:
        os.kill(-1, signal.SIGKILL)
    except ProcessLookupError:
        found = False
    else:
        found = True
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:  # reap the children and the orphans re-parented to us
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
        path = os.path.join(JOB_DIR, safe_relative(name))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(content)
    stdin_fd = os.memfd_create("stdin")
    os.write(stdin_fd, job["stdin"].encode())
    os.lseek(stdin_fd, 0, os.SEEK_SET)
    env = {"PATH": PATH, "HOME": JOB_DIR, "TMPDIR": "/tmp", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
    try:
        proc = subprocess.Popen(job["argv"], cwd=JOB_DIR, stdin=stdin_fd, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env, start_new_session=True,
                                preexec_fn=limits(job))
    except OSError as exc:
        os.close(stdin_fd)
        return {"stderr": "%s: %s" % (type(exc).__name__, exc), "exit_code": 127,
                "wall_s": time.monotonic() - start, "leftovers": False}
    os.close(stdin_fd)
    limit = job["output_limit_bytes"]
    deadline = start + job["time_limit_s"]
    buffers = {proc.stdout: bytearray(), proc.stderr: bytearray()}
    timed_out = truncated = False
    leftovers = False
    status = None
    with selectors.DefaultSelector() as sel:
        for stream in buffers:
            sel.register(stream, selectors.EVENT_READ)
        while sel.get_map() and not truncated:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            if status is None and proc.poll() is not None:
                # The program is done: whatever still holds its pipes open is a leftover (a
                # daemon); kill it so the pipes reach EOF, keeping all output written so far.
                status = proc.returncode
                leftovers = kill_everything_else()
            for key, _ in sel.select(timeout=min(remaining, 0.05)):
                chunk = os.read(key.fd, 1 << 16)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                buffers[key.fileobj] += chunk
                truncated = truncated or len(buffers[key.fileobj]) > limit
    if status is None and not (timed_out or truncated):
        try:
            status = proc.wait(timeout=max(deadline - time.monotonic(), 0))
        except subprocess.TimeoutExpired:
            timed_out = True
    wall_s = time.monotonic() - start
    leftovers = kill_everything_else() or leftovers
    if proc.returncode is None:
        proc.returncode = -signal.SIGKILL  # reaped by kill_everything_else
    for stream in buffers:
        stream.close()
    wipe(WORK)
    wipe("/tmp")
    if os.path.isdir("/dev/shm"):
        wipe("/dev/shm")
    killed = timed_out or truncated
    return {
        "stdout": bytes(buffers[proc.stdout][:limit]).decode("utf-8", "replace"),
        "stderr": bytes(buffers[proc.stderr][:limit]).decode("utf-8", "replace"),
        "exit_code": None if killed else status,
        "timed_out": timed_out or status == -signal.SIGXCPU,
        "output_truncated": truncated,
        "wall_s": wall_s,
        "leftovers": leftovers and not killed,
        "oom_kills": oom_kills() - ooms_before,
    }


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

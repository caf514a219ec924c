"""Supervising one untrusted program: what the local sandbox and the in-container runner share.

- `rlimits`: the resource limits of a job; the time limit is CPU time (`cpu_limit_s`), with a
  wall-clock backstop (`wall_limit_s`), and `time_limit_hit` says which one a job ran into;
- `safe_relative`: a job file name as a path inside the work directory, or ValueError;
- `memfd`: an in-memory file holding the job's stdin or a file;
- `collect_output`: stdout and stderr of the running program until it exits, the wall clock runs
  out or the output overflows, and `Collected.result` the fields of the result from them;
- `is_memory_failure`: whether stderr says the program ran out of memory.

Standard library only, and no import of ttsd: the Docker image copies this file next to its runner
(`sandbox/runner.py`, run by the image's own python3), which loads it by path.
"""

from __future__ import annotations

import math
import os
import resource
import selectors
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

# Text in stderr that means the program ran out of (address) space.
MEMORY_MARKERS = ("MemoryError", "Cannot allocate memory", "std::bad_alloc", "out of memory")


WALL_BACKSTOP_FACTOR = 10  # the wall-clock backstop is this many times a job's CPU time limit


def cpu_limit_s(time_limit_s: float) -> int:
    """The RLIMIT_CPU soft limit (whole seconds) of a job whose CPU time limit is `time_limit_s`.

    A job's time limit is CPU time, as competitive judges count it: what the program computed, not
    how long it waited for a core, so a verdict does not depend on how many jobs run beside it.
    RLIMIT_CPU counts whole seconds, so the limit in force is the time limit rounded up to a whole
    second, in both sandboxes; where the CPU time is measured as well (the Docker runner, the local
    sandbox without bubblewrap) it is compared with the same rounded limit (`time_limit_hit`), so
    both sandboxes give one verdict.
    """
    return max(1, math.ceil(time_limit_s))


def wall_limit_s(time_limit_s: float) -> float:
    """The wall-clock backstop of a job: WALL_BACKSTOP_FACTOR times its CPU time limit. It stops a
    program that uses no CPU (sleeping, blocked) and bounds one whose processes each stay under the
    per-process CPU rlimit. A program that computes for its whole limit meets the backstop only when
    more than 10 runnable processes share its core (16 judges on 2 cores are 8 per core)."""
    return WALL_BACKSTOP_FACTOR * time_limit_s


def time_limit_hit(wall_timed_out: bool, exit_code: int | None, cpu_s: float | None, time_limit_s: float) -> str | None:
    """Which time limit a job ran into: "cpu" (killed by the CPU rlimit's SIGXCPU, or measured past
    it: a program that ignores SIGXCPU is SIGKILLed a second later), "wall" (the wall-clock
    backstop), or None."""
    if exit_code == -signal.SIGXCPU or (cpu_s is not None and cpu_s > cpu_limit_s(time_limit_s)):
        return "cpu"
    return "wall" if wall_timed_out else None


def children_cpu_s() -> float:
    """CPU seconds (user + system) of every child and descendant this process has reaped so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wait_with_cpu(proc: subprocess.Popen) -> tuple[int, float]:
    """Reap `proc`: (its Popen-style return code, the CPU seconds of it and its reaped descendants)."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_utime + usage.ru_stime


def rlimits(
    time_limit_s: float,
    memory_limit_mb: int,
    file_size_limit_mb: int,
    max_open_files: int,
    max_processes: int | None = None,
) -> dict[str, tuple[int, int]]:
    """(soft, hard) per resource, by the name shared by `prlimit --NAME` and `resource.RLIMIT_NAME`.

    max_processes: None where something else caps processes (the container's pids cgroup).
    """
    cpu = cpu_limit_s(time_limit_s)
    limits = {
        "cpu": (cpu, cpu + 1),  # SIGXCPU at the soft limit, SIGKILL a second later (SIGXCPU ignored)
        "as": (memory_limit_mb << 20,) * 2,
        "fsize": (file_size_limit_mb << 20,) * 2,
        "nofile": (max_open_files,) * 2,
        "core": (0, 0),
    }
    if max_processes is not None:
        limits["nproc"] = (max_processes,) * 2
    return limits


def safe_relative(name: str) -> str:
    """A job file name as a path inside the work dir; refuses absolute paths and `..`."""
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts or ".." in parts or name.startswith("/"):
        raise ValueError(f"job file name {name!r} must be a relative path inside the work dir")
    return "/".join(parts)


def memfd(name: str, data: bytes) -> int:
    """An anonymous in-memory file holding `data`, positioned at its start (close-on-exec)."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


def is_memory_failure(stderr: str) -> bool:
    tail = stderr[-4000:]
    return any(marker in tail for marker in MEMORY_MARKERS)


@dataclass
class Collected:
    """What `collect_output` saw: the output (capped) and why it stopped."""

    stdout: bytes
    stderr: bytes
    timed_out: bool  # the wall clock ran out
    truncated: bool  # stdout or stderr went past the output limit

    @property
    def killed(self) -> bool:
        """The supervisor ends the program: its exit status is not its own."""
        return self.timed_out or self.truncated

    def result(self, exit_code: int | None, cpu_s: float | None = None, time_limit_s: float = math.inf) -> dict:
        """The common fields of a job's result (`ttsd.sandbox.base.ExecResult`); `exit_code` is the
        program's (negative: killed by that signal), `cpu_s` the CPU time it used (None: unknown)."""
        hit = time_limit_hit(self.timed_out, exit_code, cpu_s, time_limit_s)
        exit_code = None if self.killed else exit_code
        return {
            "stdout": self.stdout.decode("utf-8", errors="replace"),
            "stderr": self.stderr.decode("utf-8", errors="replace"),
            "exit_code": exit_code,
            "timed_out": hit is not None,
            "time_limit_hit": hit,
            "cpu_s": cpu_s,
            "output_truncated": self.truncated,
        }


def collect_output(
    proc: subprocess.Popen,
    deadline: float,
    output_limit: int,
    on_exit: Callable[[], None] | None = None,
    drain_s: float = math.inf,
) -> Collected:
    """Read the program's stdout and stderr until it has exited and both pipes are closed, the wall
    clock reaches `deadline` (time.monotonic), or either stream exceeds `output_limit` bytes.

    The program is watched through a pidfd (readable once it has exited, without reaping it, so its
    pid cannot be reused while the caller still signals its process group), so its end is seen at
    once rather than by polling. `on_exit` runs once when it has exited: whatever still holds its
    pipes then is a leftover, which the caller may kill so that the pipes reach EOF. `drain_s`: how
    long after the exit the output may still drain (where a leftover cannot be killed reliably).
    The caller kills what is left and reaps the program afterwards.
    """
    buffers = {proc.stdout: bytearray(), proc.stderr: bytearray()}
    timed_out = truncated = False
    exited_at: float | None = None
    pidfd = _pidfd_open(proc.pid)

    def exited() -> None:
        nonlocal exited_at
        exited_at = time.monotonic()
        if on_exit is not None:
            on_exit()

    with selectors.DefaultSelector() as sel:
        for stream in buffers:
            os.set_blocking(stream.fileno(), False)
            sel.register(stream, selectors.EVENT_READ)
        if pidfd is not None:
            sel.register(pidfd, selectors.EVENT_READ, data="exited")
        open_streams = len(buffers)
        while not truncated:
            now = time.monotonic()
            if exited_at is None and pidfd is None and _has_exited(proc):
                exited()
            if exited_at is not None and (open_streams == 0 or now - exited_at > drain_s):
                break
            if now >= deadline:
                timed_out = True
                break
            wait = deadline - now
            if exited_at is not None:
                wait = min(wait, exited_at + drain_s - now)
            if pidfd is None:
                wait = min(wait, 0.01)
            for key, _ in sel.select(timeout=max(wait, 0.0005)):
                if key.data == "exited":
                    sel.unregister(pidfd)
                    exited()
                    continue
                try:
                    chunk = os.read(key.fd, 1 << 16)
                except BlockingIOError:
                    continue
                if not chunk:
                    sel.unregister(key.fileobj)
                    open_streams -= 1
                    continue
                buf = buffers[key.fileobj]
                buf += chunk
                if len(buf) > output_limit:
                    truncated = True
    if pidfd is not None:
        os.close(pidfd)
    return Collected(
        stdout=bytes(buffers[proc.stdout][:output_limit]),
        stderr=bytes(buffers[proc.stderr][:output_limit]),
        timed_out=timed_out,
        truncated=truncated,
    )


def _pidfd_open(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (OSError, AttributeError):  # kernels before 5.3: poll instead
        return None


def _has_exited(proc: subprocess.Popen) -> bool:
    """Whether the process has exited, without reaping it (its pid stays reserved)."""
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True

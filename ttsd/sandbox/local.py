"""The local sandbox: bubblewrap namespaces + rlimits + a dedicated uid + a wall-clock kill.

Layers, outermost first (each one closes a hole the others leave open):

1. A dedicated, otherwise unused uid per concurrent job (when ttsd runs as root), entered by
   exec'ing `setpriv` so that Popen keeps using vfork (a fork of a process holding a model costs
   hundreds of milliseconds): RLIMIT_NPROC is never enforced for root, so a fork bomb is only
   stopped by running as someone else. bubblewrap then runs unprivileged, in a user namespace.
2. bubblewrap: new user, pid, network, ipc, uts and cgroup namespaces (`--unshare-all`); only the
   read-only system (`/usr` and the loader cache) is mounted; the work directory, `/tmp` and
   `/dev/shm` are size-capped tmpfs that vanish with the sandbox; the root is remounted read-only;
   a clean environment; `--new-session` (no terminal injection); `--die-with-parent`. The program
   is pid 2 of its own pid namespace, so when it exits or is killed every process it started
   (daemons included) is killed by the kernel.
3. rlimits, applied with `prlimit` just before the program (so the sandbox machinery itself is not
   limited): CPU seconds (the job's time limit), address space, processes, file size, open files,
   no core dumps. Without bubblewrap the program's CPU time is also measured when it is reaped
   (`wait4`); inside bubblewrap's pid namespace it is reaped out of reach, and the rlimit alone rules.
4. The wall-clock backstop (`supervisor.wall_limit_s`, a multiple of the CPU time limit) and the
   output cap are enforced here: on either, the whole process group is killed with SIGKILL (which
   takes the pid namespace down with it).

The job's files and its stdin travel as memfds (`bwrap --file FD DEST`, stdin = a memfd), so
nothing is written to the host's disk and nothing is left behind.

Where bubblewrap or unprivileged user namespaces are unavailable the sandbox falls back to rlimits
and the dedicated uid only, and says loudly what is then not isolated.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from ttsd.sandbox.base import ExecResult, Job, SandboxUnavailable
from ttsd.sandbox.supervisor import (
    collect_output,
    is_memory_failure,
    memfd,
    rlimits,
    safe_relative,
    wait_with_cpu,
    wall_limit_s,
)

WORK_DIR = "/work"  # the program's current directory inside the sandbox
SANDBOX_UID = 1000  # the uid the program sees inside its user namespace
DEFAULT_UID_BASE = 1_650_000_000  # far above any uid a distribution hands out
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"

_FALLBACK_WARNING = (
    "WARNING: ttsd local sandbox is running WITHOUT bubblewrap ({reason}). Untrusted programs are "
    "limited by rlimits{uid_note} only: they can read every world-readable host file, open network "
    "connections, see other processes, and write to the host's temporary directory (file size is "
    "capped, the total is not). Install bubblewrap (apt-get install bubblewrap) and allow user "
    "namespaces, or use --sandbox docker."
)
_probe_lock = threading.Lock()
_probe_cache: dict[tuple[str, int | None], str | None] = {}


def missing_tools(as_root: bool | None = None) -> list[str]:
    """What the local sandbox cannot run without, whether or not bubblewrap is there: `prlimit`
    (the rlimits) always, `setpriv` (the dedicated uid) when ttsd runs as root. Empty when all is there."""
    as_root = os.geteuid() == 0 if as_root is None else as_root
    needed = ["prlimit", *(["setpriv"] if as_root else [])]
    return [f"`{tool}` (util-linux) is missing: apt-get install util-linux" for tool in needed
            if shutil.which(tool, path=SYSTEM_PATH) is None]


class _UidPool:
    """Hands out dedicated uids, one per running job, unique across every process on the host.

    A uid is held by binding an abstract unix socket named after it: the kernel releases it when
    the holder dies, so a crashed ttsd never leaks a uid and there is no lock file to clean up.
    """

    def __init__(self, base: int, size: int = 4096):
        self.base = base
        self.size = size
        self._lock = threading.Lock()
        self._held: dict[int, socket.socket] = {}

    def acquire(self) -> int:
        with self._lock:
            for uid in range(self.base, self.base + self.size):
                if uid in self._held:
                    continue
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                try:
                    sock.bind(f"\0ttsd-sandbox-uid-{uid}")
                except OSError:
                    sock.close()
                    continue
                self._held[uid] = sock
                return uid
        raise SandboxUnavailable(f"all {self.size} sandbox uids from {self.base} are in use")

    def release(self, uid: int) -> None:
        with self._lock:
            sock = self._held.pop(uid, None)
        if sock is not None:
            sock.close()

    @contextmanager
    def hold(self) -> Iterator[int]:
        uid = self.acquire()
        try:
            yield uid
        finally:
            self.release(uid)


_uid_pools: dict[int, _UidPool] = {}
_uid_pools_lock = threading.Lock()


def _uid_pool(base: int) -> _UidPool:
    with _uid_pools_lock:
        return _uid_pools.setdefault(base, _UidPool(base))


class LocalSandbox:
    """Run jobs under bubblewrap + rlimits as a dedicated uid. Thread-safe; no pooled state.

    isolation: "auto" (bubblewrap when it works here, else rlimits with a loud warning),
    "bwrap" (fail with SandboxUnavailable when bubblewrap cannot run), or "rlimits".
    """

    name = "local"

    def __init__(
        self,
        isolation: str = "auto",
        max_processes: int = 64,
        max_open_files: int = 256,
        disk_limit_mb: int = 256,
        file_size_limit_mb: int = 64,
        uid_base: int = DEFAULT_UID_BASE,
        bwrap: str | None = None,
    ):
        if isolation not in ("auto", "bwrap", "rlimits"):
            raise ValueError(f"isolation must be 'auto', 'bwrap' or 'rlimits', not {isolation!r}")
        self.max_processes = max_processes
        self.max_open_files = max_open_files
        self.disk_limit_mb = disk_limit_mb
        self.file_size_limit_mb = file_size_limit_mb
        self.as_root = os.geteuid() == 0
        self._uids = _uid_pool(uid_base) if self.as_root else None
        missing = missing_tools(self.as_root)
        if missing:
            raise SandboxUnavailable("; ".join(missing))
        self.prlimit = shutil.which("prlimit", path=SYSTEM_PATH)
        self.setpriv = shutil.which("setpriv", path=SYSTEM_PATH)
        self.bwrap = bwrap if bwrap is not None else shutil.which("bwrap")
        problem = None if isolation == "rlimits" else self._probe_bwrap()
        if isolation == "bwrap" and problem:
            raise SandboxUnavailable(f"bubblewrap cannot run here: {problem}")
        self.isolation = "rlimits" if (isolation == "rlimits" or problem) else "bwrap"
        self.fallback_reason = problem if isolation == "auto" else None
        if self.isolation == "rlimits" and isolation == "auto":
            _warn_fallback(problem or "", self.as_root)

    # -- set-up ---------------------------------------------------------------------------------

    def _probe_bwrap(self) -> str | None:
        """None when bubblewrap runs a program here with all our options, else why it does not."""
        if self.bwrap is None or not os.access(self.bwrap, os.X_OK):
            return f"bwrap is not installed (apt-get install bubblewrap){'' if self.bwrap is None else ': ' + self.bwrap}"
        key = (self.bwrap, self._uids.base if self._uids else None)
        with _probe_lock:
            if key not in _probe_cache:
                _probe_cache[key] = self._run_probe()
            return _probe_cache[key]

    def _run_probe(self) -> str | None:
        try:
            result = self.run(Job(argv=["true"], time_limit_s=10), _force="bwrap")
        except OSError as exc:
            return f"bwrap failed to start: {exc}"
        if result.exit_code != 0:
            return f"bwrap failed (user namespaces disabled?): {result.stderr.strip()[:300]}"
        return None

    def _setpriv_argv(self, uid: int) -> list[str]:
        return [self.setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"]

    def _rlimit_argv(self, job: Job) -> list[str]:
        limits = rlimits(job.time_limit_s, job.memory_limit_mb, self.file_size_limit_mb, self.max_open_files,
                         max_processes=self.max_processes)
        return [self.prlimit, *(f"--{name}={soft}:{hard}" for name, (soft, hard) in limits.items()), "--"]

    def _bwrap_argv(self, job: Job, file_fds: dict[str, int]) -> list[str]:
        tmpfs_bytes = str(self.disk_limit_mb << 20)
        argv = [
            self.bwrap,
            "--unshare-all",
            "--unshare-user",
            "--disable-userns",
            "--die-with-parent",
            "--new-session",
            "--uid", str(SANDBOX_UID),
            "--gid", str(SANDBOX_UID),
            "--hostname", "sandbox",
            "--ro-bind", "/usr", "/usr",
        ]
        for link in ("bin", "lib", "lib32", "lib64", "libx32", "sbin"):
            host = f"/{link}"
            if os.path.islink(host):
                argv += ["--symlink", os.readlink(host), host]
            elif os.path.isdir(host):
                argv += ["--ro-bind", host, host]
        for etc in ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives",
                    "/etc/localtime"):
            if os.path.exists(etc):
                argv += ["--ro-bind", etc, etc]
        argv += [
            "--proc", "/proc",
            "--dev", "/dev",
            "--size", tmpfs_bytes, "--tmpfs", "/dev/shm",
            "--size", tmpfs_bytes, "--tmpfs", "/tmp",
            "--size", tmpfs_bytes, "--perms", "0755", "--tmpfs", WORK_DIR,
        ]
        made_dirs: set[str] = set()
        for rel, fd in file_fds.items():
            parent = os.path.dirname(rel)
            if parent and parent not in made_dirs:
                argv += ["--dir", f"{WORK_DIR}/{parent}"]
                made_dirs.add(parent)
            argv += ["--perms", "0644", "--file", str(fd), f"{WORK_DIR}/{rel}"]
        argv += [
            "--remount-ro", "/dev",
            "--remount-ro", "/",
            "--chdir", WORK_DIR,
            "--clearenv",
            "--setenv", "PATH", SYSTEM_PATH,
            "--setenv", "HOME", WORK_DIR,
            "--setenv", "TMPDIR", "/tmp",
            "--setenv", "LANG", "C.UTF-8",
            "--setenv", "PYTHONDONTWRITEBYTECODE", "1",
            "--",
        ]
        return argv

    # -- running --------------------------------------------------------------------------------

    def run(self, job: Job, _force: str | None = None) -> ExecResult:
        isolation = _force or self.isolation
        if self._uids is None:
            return self._run_as(job, isolation, uid=None)
        with self._uids.hold() as uid:
            return self._run_as(job, isolation, uid=uid)

    def _run_as(self, job: Job, isolation: str, uid: int | None) -> ExecResult:
        start = time.monotonic()
        files = {safe_relative(name): content.encode() for name, content in job.files.items()}
        fds: list[int] = []
        host_dir: str | None = None
        try:
            stdin_fd = memfd("stdin", job.stdin.encode())
            fds.append(stdin_fd)
            popen_kwargs: dict = {}
            if isolation == "bwrap":
                file_fds = {rel: memfd("file", data) for rel, data in files.items()}
                fds.extend(file_fds.values())
                argv = self._bwrap_argv(job, file_fds) + self._rlimit_argv(job) + job.argv
                popen_kwargs.update(pass_fds=tuple(file_fds.values()), cwd="/")
                env = {}
            else:
                host_dir = tempfile.mkdtemp(prefix="ttsd-job-")
                _write_host_files(host_dir, files, uid)
                argv = self._rlimit_argv(job) + job.argv
                popen_kwargs.update(cwd=host_dir)
                env = {"PATH": SYSTEM_PATH, "HOME": host_dir, "TMPDIR": host_dir, "LANG": "C.UTF-8",
                       "PYTHONDONTWRITEBYTECODE": "1"}
            if uid is not None:
                # Drop to the job's uid by exec'ing setpriv rather than with Popen(user=...): that
                # keeps Popen on vfork, whose cost does not grow with the memory of this process
                # (a loaded model makes a plain fork take tens of milliseconds).
                argv = self._setpriv_argv(uid) + argv
            proc = subprocess.Popen(
                argv,
                stdin=stdin_fd,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                start_new_session=True,
                close_fds=True,
                **popen_kwargs,
            )
        except BaseException:
            for fd in fds:
                os.close(fd)
            if host_dir:
                _remove_host_dir(host_dir, uid)
            raise
        for fd in fds:  # the child holds its own copies now
            os.close(fd)
        result: ExecResult | None = None
        try:
            result = self._supervise(proc, job, start, isolation)
            return result
        finally:
            if proc.returncode is None:  # an exception escaped `_supervise`
                _kill_group(proc)
                proc.wait()
            killed = result is None or result.exit_code is None
            if uid is not None and (isolation != "bwrap" or killed):
                # Without a pid namespace daemons escape the process group; with one, a killed
                # sandbox's processes may still be dying when bwrap has gone. Either way the uid
                # is released only once nothing runs under it.
                _kill_uid(uid)
            if host_dir:
                _remove_host_dir(host_dir, uid)

    def _supervise(self, proc: subprocess.Popen, job: Job, start: float, isolation: str) -> ExecResult:
        """Collect output until the program ends, the wall clock runs out or the output overflows."""
        # Without a pid namespace an escaped daemon may hold the pipes open: once the program has
        # exited, its output gets this long to drain. With one, the pipes close when it ends.
        drain_s = 0.2 if isolation != "bwrap" else math.inf
        collected = collect_output(proc, start + wall_limit_s(job.time_limit_s), job.output_limit_bytes, drain_s=drain_s)
        # Kill while the leader is a zombie at most, so its pid cannot be reused as a group id.
        _kill_group(proc)
        exit_status, cpu_s = wait_with_cpu(proc)
        if isolation == "bwrap":
            cpu_s = None  # the program is reaped inside bwrap's pid namespace: its CPU time never reaches us
        for stream in (proc.stdout, proc.stderr):
            stream.close()
        fields = collected.result(_program_exit_code(exit_status, isolation), cpu_s, job.time_limit_s)
        cpu_killed = fields["exit_code"] in (-signal.SIGXCPU, -signal.SIGKILL) and isolation == "bwrap"
        return ExecResult(
            **fields,
            memory_exceeded=is_memory_failure(fields["stderr"]) and not cpu_killed,
            wall_s=time.monotonic() - start,
        )

    def close(self) -> None:
        """Nothing is pooled: every job's processes and files are gone when `run` returns."""


def _program_exit_code(status: int, isolation: str) -> int:
    """The program's exit code; negative signal numbers for a program killed by a signal.

    bubblewrap reports a child killed by signal N as exit code 128 + N.
    """
    if status < 0:
        return status
    if isolation == "bwrap" and 128 < status <= 128 + 64:
        return -(status - 128)
    return status


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_uid(uid: int, timeout_s: float = 5.0) -> None:
    """Kill every process owned by `uid`, and wait until there is none left.

    `kill -9 -1` run as that uid signals exactly the processes that uid owns (in every pid
    namespace below ours) and fails once there is none.
    """
    setpriv = shutil.which("setpriv", path=SYSTEM_PATH) or "setpriv"
    argv = [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--", "kill", "-9", "-1"]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={"PATH": SYSTEM_PATH}).returncode == 0
        if not found:
            return
        time.sleep(0.01)


def _write_host_files(host_dir: str, files: dict[str, bytes], uid: int | None) -> None:
    os.chmod(host_dir, 0o700)
    for rel, data in files.items():
        path = os.path.join(host_dir, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    if uid is not None:
        for root, dirs, names in os.walk(host_dir):
            for name in [*dirs, *names]:
                os.chown(os.path.join(root, name), uid, uid)
        os.chown(host_dir, uid, uid)


def _remove_host_dir(host_dir: str, uid: int | None) -> None:
    def retry_writable(func, path, _exc):  # the program may have made its files read-only
        try:
            os.chmod(os.path.dirname(path), 0o700)
            os.chmod(path, 0o700)
            func(path)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise

    shutil.rmtree(host_dir, onerror=retry_writable)


def _warn_fallback(reason: str, as_root: bool) -> None:
    # Logger "ttsd...": a solve shows it on the terminal beside the live table (ttsd.logs); with no
    # logging set up, Python's last-resort handler prints it to stderr.
    uid_note = " and a dedicated uid" if as_root else " (and NOT a dedicated uid: ttsd is not root)"
    logging.getLogger(__name__).warning(_FALLBACK_WARNING.format(reason=reason, uid_note=uid_note).removeprefix("WARNING: "))

"""The Docker sandbox: one hardened container per job, or a warm pool of them.

Every container: network none, memory (= swap) and pids limits, a CPU quota, a read-only root,
size-capped tmpfs /work, /tmp and /dev/shm, uid 65534, every capability dropped,
no-new-privileges, no log driver, labelled `ttsd.sandbox` with its owner (host, pid, start time).

Inside, `sandbox/runner.py` is pid 1: it reads one JSON job per line on its stdin (the attach
stream), runs the program under rlimits (a CPU time limit) with a wall-clock backstop and an output cap (the same
supervisor as the local sandbox, `ttsd/sandbox/supervisor.py`, copied into the image), kills whatever
the program left behind, wipes /work, /tmp and /dev/shm, and answers one JSON line. The host keeps
its own deadline (the backstop plus a margin): when the runner does not answer by then the
container is killed with `docker kill` (killing a client never stops a container).

pool_size=0: a fresh container per job, removed after it. pool_size=N: up to N long-lived
containers reused across jobs; a container is recycled (killed, removed, replaced in the
background) after any job that did not end with a clean exit 0, and after any job that left a
process behind, so a program can never influence a later job.

Leftovers (containers of ttsd processes that died) are found by label and removed when a sandbox
starts; a sandbox removes its own containers when it closes.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import queue
import socket
import struct
import threading
import time
import uuid
import weakref
from dataclasses import dataclass, field

from ttsd.sandbox.base import ExecResult, Job, SandboxUnavailable
from ttsd.sandbox.supervisor import is_memory_failure, safe_relative, wall_limit_s

logger = logging.getLogger(__name__)

LABEL = "ttsd.sandbox"
OWNER_LABEL = "ttsd.sandbox.owner"
INSTANCE_LABEL = "ttsd.sandbox.instance"  # one DockerSandbox object
HOST_MARGIN_S = 5.0  # the host's deadline beyond the runner's own wall-clock backstop
MEMORY_HEADROOM_MB = 192  # the container's memory above the job's address-space limit (runner, tmpfs)

HOW_TO_START = (
    "start one with `sudo dockerd &` (here: `sudo dockerd --iptables=false --ip6tables=false "
    "--bridge=none &`) or `sudo systemctl start docker`, then build the image with "
    "`ttsd sandbox build`"
)


def connect(timeout_s: float = 30.0):
    """A docker client for a reachable engine, else SandboxUnavailable saying how to start one."""
    try:
        import docker
    except ImportError as exc:  # pragma: no cover - docker is a dependency
        raise SandboxUnavailable(f"the docker Python package is missing ({exc}): pip install docker") from exc
    try:
        client = docker.from_env(timeout=int(timeout_s), max_pool_size=32)
        client.ping()
    except Exception as exc:  # DockerException, requests' ConnectionError, PermissionError...
        host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        raise SandboxUnavailable(
            f"no Docker engine is reachable at {host} ({type(exc).__name__}): {HOW_TO_START}"
        ) from None
    return client


def _process_start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def owner_id(pid: int | None = None) -> str:
    pid = pid or os.getpid()
    return f"{socket.gethostname()}:{pid}:{_process_start_time(pid)}"


def _owner_alive(owner: str) -> bool:
    try:
        host, pid, started = owner.rsplit(":", 2)
    except ValueError:
        return False
    if host != socket.gethostname():
        return True  # another machine's engine client: not ours to judge
    return _process_start_time(int(pid)) == started


def _gone(error: Exception) -> bool:
    """The engine's answer for a container that another process removed (or is removing) meanwhile."""
    import docker.errors

    if isinstance(error, docker.errors.NotFound):
        return True
    # 409 "removal of container ... is already in progress": another ttsd process got there first
    return isinstance(error, docker.errors.APIError) and error.status_code == 409 and "in progress" in str(error)


def remove_leftovers(client, include_live_owners: bool = False, owner: str | None = None) -> int:
    """Remove labelled containers whose ttsd process has ended (or `owner`'s, or all of them).

    Other ttsd processes remove their own containers meanwhile, so a container may vanish between
    the listing and its removal: that is not an error (it is not counted). The listing is the
    engine's raw one (labels included), so nothing is inspected per container."""
    removed = 0
    for entry in client.api.containers(all=True, filters={"label": LABEL}):
        container_owner = (entry.get("Labels") or {}).get(OWNER_LABEL, "")
        if owner is not None:
            doomed = container_owner == owner
        else:
            doomed = include_live_owners or not _owner_alive(container_owner)
        if not doomed:
            continue
        try:
            client.api.remove_container(entry["Id"], force=True)
        except Exception as error:
            if not _gone(error):  # best effort: a leftover that cannot go now is retried next start
                logger.warning("could not remove leftover sandbox container %s: %s", entry["Id"][:12], error)
            continue
        removed += 1
    return removed


_open_sandboxes: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _close_open_sandboxes() -> None:
    """Containers must not outlive ttsd, even when a caller forgot `close()`."""
    for sandbox in list(_open_sandboxes):
        try:
            sandbox.close()
        except Exception:
            pass


class _Channel:
    """The runner's stdin/stdout over the attach socket (a multiplexed stream: 8-byte headers)."""

    def __init__(self, sock):
        self.sock = getattr(sock, "_sock", sock)
        self.pending = bytearray()  # stdout bytes not yet consumed
        self.stderr = bytearray()
        self._raw = bytearray()

    def send(self, data: bytes) -> None:
        self.sock.settimeout(30)
        self.sock.sendall(data)

    def read_line(self, deadline: float) -> bytes | None:
        """The next stdout line, or None at EOF; TimeoutError after `deadline`."""
        while b"\n" not in self.pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(1 << 16)
            except socket.timeout:
                raise TimeoutError from None
            if not chunk:
                return None
            self._raw += chunk
            while len(self._raw) >= 8:
                stream, size = struct.unpack(">BxxxL", self._raw[:8])
                if len(self._raw) < 8 + size:
                    break
                payload = bytes(self._raw[8 : 8 + size])
                del self._raw[: 8 + size]
                if stream == 1:
                    self.pending += payload
                else:
                    self.stderr += payload[-65536:]
        line, _, rest = bytes(self.pending).partition(b"\n")
        self.pending = bytearray(rest)
        return line

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


@dataclass
class _Worker:
    container_id: str
    channel: _Channel
    memory_mb: int
    jobs: int = 0
    created: float = field(default_factory=time.monotonic)


class DockerSandbox:
    """Run jobs in hardened containers. Thread-safe.

    pool_size: 0 for a fresh container per job, N for up to N warm containers reused across jobs.
    pool_memory_mb: the memory limit of pooled containers (a job asking for more than this minus
    headroom gets a container of its own).
    """

    name = "docker"

    def __init__(
        self,
        image: str | None = None,
        pool_size: int = 4,
        pool_memory_mb: int = 1024 + MEMORY_HEADROOM_MB,
        cpus: float = 1.0,
        max_processes: int = 64,
        max_open_files: int = 256,
        disk_limit_mb: int = 256,
        file_size_limit_mb: int = 64,
    ):
        from ttsd.sandbox.image import image_exists, image_tag

        self._closed = True  # until fully built, for __del__
        self.client = connect()
        self.image = image or image_tag()
        if not image_exists(self.client, self.image):
            raise SandboxUnavailable(
                f"the sandbox image {self.image} is missing: build it with `ttsd sandbox build`"
            )
        self.pool_size = pool_size
        self.pool_memory_mb = pool_memory_mb
        self.cpus = cpus
        self.max_processes = max_processes
        self.max_open_files = max_open_files
        self.disk_limit_mb = disk_limit_mb
        self.file_size_limit_mb = file_size_limit_mb
        self.owner = owner_id()
        self.instance = uuid.uuid4().hex[:16]
        self._idle: queue.LifoQueue[_Worker] = queue.LifoQueue()
        self._lock = threading.Lock()
        self._pooled = 0  # pooled workers alive: idle, busy or being replaced
        self._slot_freed = threading.Condition(self._lock)
        self._background: list[threading.Thread] = []
        self._closed = False
        remove_leftovers(self.client)
        _open_sandboxes.add(self)

    # -- containers -----------------------------------------------------------------------------

    def _start_worker(self, memory_mb: int) -> _Worker:
        import docker.types

        tmpfs_size = f"{self.disk_limit_mb}m"
        host_config = self.client.api.create_host_config(
            network_mode="none",
            mem_limit=f"{memory_mb}m",
            memswap_limit=f"{memory_mb}m",
            pids_limit=self.max_processes,
            nano_cpus=int(self.cpus * 1e9),
            read_only=True,
            tmpfs={
                "/work": f"rw,nosuid,nodev,size={tmpfs_size},mode=1777",
                "/tmp": f"rw,nosuid,nodev,size={tmpfs_size},mode=1777",
                "/dev/shm": f"rw,nosuid,nodev,noexec,size={tmpfs_size},mode=1777",
            },
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            log_config=docker.types.LogConfig(type="none"),
            ulimits=[docker.types.Ulimit(name="core", soft=0, hard=0)],
            ipc_mode="private",
        )
        container = self.client.api.create_container(
            self.image,
            user="65534:65534",
            working_dir="/work",
            stdin_open=True,
            tty=False,
            network_disabled=True,
            labels={LABEL: "1", OWNER_LABEL: self.owner, INSTANCE_LABEL: self.instance},
            host_config=host_config,
        )
        cid = container["Id"]
        try:
            sock = self.client.api.attach_socket(cid, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
            self.client.api.start(cid)
        except Exception:
            self._remove(cid)
            raise
        return _Worker(container_id=cid, channel=_Channel(sock), memory_mb=memory_mb)

    def _remove(self, container_id: str) -> None:
        try:
            self.client.api.remove_container(container_id, force=True)  # SIGKILL, then remove
        except Exception:
            pass

    def _discard(self, worker: _Worker, pooled: bool) -> None:
        """Remove a container: a per-job one now; a pooled one in the background, replaced."""
        worker.channel.close()
        if not pooled:
            self._remove(worker.container_id)
            return
        thread = threading.Thread(target=self._replace, args=(worker,), daemon=True)
        with self._lock:
            self._background.append(thread)
        thread.start()

    def _replace(self, worker: _Worker) -> None:
        replacement = None
        with self._lock:
            closed = self._closed
        if not closed:
            try:
                replacement = self._start_worker(self.pool_memory_mb)
            except Exception:  # the next job starts one (and reports the error) instead
                replacement = None
        self._remove(worker.container_id)
        with self._lock:
            if replacement is not None and not self._closed:
                self._idle.put(replacement)
                replacement = None
            else:
                self._pooled -= 1
            self._slot_freed.notify()
        if replacement is not None:
            self._remove(replacement.container_id)

    def _acquire(self, memory_mb: int) -> tuple[_Worker, bool]:
        """A worker for a job needing `memory_mb`; True when it belongs to the pool."""
        if self.pool_size <= 0 or memory_mb > self.pool_memory_mb:
            return self._start_worker(memory_mb), False
        while True:
            try:
                return self._idle.get_nowait(), True
            except queue.Empty:
                pass
            with self._lock:
                if self._closed:
                    raise SandboxUnavailable("the Docker sandbox is closed")
                if self._pooled < self.pool_size:
                    self._pooled += 1
                    break
                self._slot_freed.wait(timeout=0.05)
        try:
            return self._start_worker(self.pool_memory_mb), True
        except BaseException:
            with self._lock:
                self._pooled -= 1
                self._slot_freed.notify()
            raise

    def _release(self, worker: _Worker) -> None:
        with self._lock:
            if not self._closed:
                self._idle.put(worker)
                self._slot_freed.notify()
                return
        worker.channel.close()
        self._remove(worker.container_id)
        with self._lock:
            self._pooled -= 1

    # -- running --------------------------------------------------------------------------------

    def run(self, job: Job) -> ExecResult:
        start = time.monotonic()
        files = {safe_relative(name): content for name, content in job.files.items()}
        memory_mb = job.memory_limit_mb + MEMORY_HEADROOM_MB
        request = json.dumps({
            "files": files,
            "argv": job.argv,
            "stdin": job.stdin,
            "time_limit_s": job.time_limit_s,
            "memory_limit_mb": job.memory_limit_mb,
            "output_limit_bytes": job.output_limit_bytes,
            "file_size_limit_mb": self.file_size_limit_mb,
            "max_open_files": self.max_open_files,
        }).encode() + b"\n"
        worker, pooled = self._acquire(memory_mb)
        reusable = False
        try:
            worker.jobs += 1
            worker.channel.send(request)
            try:
                line = worker.channel.read_line(time.monotonic() + wall_limit_s(job.time_limit_s) + HOST_MARGIN_S)
            except TimeoutError:
                line = b"timeout"
            result, reusable = self._result(worker, line, start)
            return result
        finally:
            if pooled and reusable:
                self._release(worker)
            else:
                # A per-job container is removed before returning, so nothing is left when `run`
                # returns; a pooled one is replaced in the background.
                self._discard(worker, pooled=pooled)

    def _result(self, worker: _Worker, line: bytes | None, start: float) -> tuple[ExecResult, bool]:
        wall = time.monotonic() - start
        if line == b"timeout":  # the runner did not answer in time: the host's kill
            self._kill(worker)
            return ExecResult(exit_code=None, timed_out=True, time_limit_hit="wall", wall_s=wall), False
        if line is None:  # the runner died: OOM kill of the whole container, or an engine failure
            if not self._oom_killed(worker):
                stderr = worker.channel.stderr[-2000:].decode(errors="replace")
                raise SandboxUnavailable(f"the sandbox container stopped unexpectedly: {stderr}")
            return ExecResult(exit_code=None, memory_exceeded=True, wall_s=wall), False
        data = json.loads(line)
        if "runner_error" in data:
            raise SandboxUnavailable(f"the sandbox runner failed: {data['runner_error']}")
        leftovers = data.pop("leftovers", False)
        oom_kills = data.pop("oom_kills", 0)  # by the container's memory cgroup during this job
        result = ExecResult(**data)
        result.memory_exceeded = oom_kills > 0 or is_memory_failure(result.stderr)
        result.wall_s = wall
        clean = result.exit_code == 0 and not (result.timed_out or result.output_truncated or leftovers)
        return result, clean and not result.memory_exceeded

    def _kill(self, worker: _Worker) -> None:
        try:
            self.client.api.kill(worker.container_id)
        except Exception:
            pass

    def _oom_killed(self, worker: _Worker) -> bool:
        try:
            self.client.api.wait(worker.container_id, timeout=5)
            state = self.client.api.inspect_container(worker.container_id)["State"]
        except Exception:
            return False
        return bool(state.get("OOMKilled")) or state.get("ExitCode") == 137

    def containers(self) -> list:
        """This sandbox's containers (docker SDK objects), running or not."""
        containers = []
        for entry in self.client.api.containers(all=True, filters={"label": f"{INSTANCE_LABEL}={self.instance}"}):
            try:
                containers.append(self.client.containers.get(entry["Id"]))
            except Exception as error:  # removed (a recycled pool container) since the listing
                if not _gone(error):
                    raise
        return containers

    def warm_up(self) -> None:
        """Start the whole pool now (otherwise containers start on first use)."""
        workers = [self._acquire(self.pool_memory_mb) for _ in range(self.pool_size)]
        for worker, _ in workers:
            self._release(worker)

    def settle(self) -> None:
        """Wait for background container replacements and removals to finish."""
        while True:
            with self._lock:
                threads = list(self._background)
                self._background.clear()
            if not threads:
                return
            for thread in threads:
                thread.join()

    def close(self) -> None:
        """Remove every container this sandbox started (idle ones now, busy ones when released)."""
        with self._lock:
            self._closed = True
        self.settle()
        while True:
            try:
                worker = self._idle.get_nowait()
            except queue.Empty:
                break
            worker.channel.close()
            self._remove(worker.container_id)
            with self._lock:
                self._pooled -= 1
        _open_sandboxes.discard(self)

    def __del__(self):  # best effort; close() is the contract
        try:
            if not self._closed:
                self.close()
        except Exception:
            pass

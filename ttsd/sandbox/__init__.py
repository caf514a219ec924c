"""Sandboxes: run one untrusted program with limits. One interface, two backends (local, docker).

`base.py` (`Job`, `ExecResult`, `Sandbox`) is the contract the judge runs programs through.
"""

from ttsd.sandbox.base import ExecResult, Job, Sandbox, SandboxUnavailable

__all__ = ["ExecResult", "Job", "Sandbox", "SandboxUnavailable", "make_sandbox"]


def make_sandbox(name: str = "local", **options) -> Sandbox:
    """Build a sandbox backend by name: "local" (bubblewrap + rlimits) or "docker".

    Both are thread-safe; close() them when done. Options (keyword arguments):
    local: isolation ("auto" | "bwrap" | "rlimits"), max_processes, max_open_files,
        disk_limit_mb (each tmpfs), file_size_limit_mb, uid_base, bwrap (path).
    docker: image (default ttsd-sandbox:<hash of sandbox/>), pool_size (0 = a container per
        job; default 4 warm containers), pool_memory_mb, cpus, max_processes, max_open_files,
        disk_limit_mb, file_size_limit_mb.
    Raises SandboxUnavailable (with how to fix it) when the backend cannot run here.
    """
    if name == "local":
        from ttsd.sandbox.local import LocalSandbox

        return LocalSandbox(**options)
    if name == "docker":
        from ttsd.sandbox.docker import DockerSandbox

        return DockerSandbox(**options)
    raise ValueError(f"unknown sandbox {name!r}: choose 'local' or 'docker'")

"""Sandboxes: run one untrusted program with limits. One interface, two backends (local, docker).

Owner: sandbox helper. `base.py` is the shared contract with the judge.
"""

from ttsd.sandbox.base import ExecResult, Job, Sandbox, SandboxUnavailable

__all__ = ["ExecResult", "Job", "Sandbox", "SandboxUnavailable", "make_sandbox"]


def make_sandbox(name: str = "local", **options) -> Sandbox:
    """Build a sandbox backend by name: "local" (bubblewrap + rlimits) or "docker"."""
    if name == "local":
        from ttsd.sandbox.local import LocalSandbox

        return LocalSandbox(**options)
    if name == "docker":
        from ttsd.sandbox.docker import DockerSandbox

        return DockerSandbox(**options)
    raise ValueError(f"unknown sandbox {name!r}: choose 'local' or 'docker'")

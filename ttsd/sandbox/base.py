"""The contract between the judge and a sandbox backend."""

from __future__ import annotations

from typing import Literal, Protocol

from pydantic import BaseModel, Field


class SandboxUnavailable(RuntimeError):
    """The backend cannot run at all (no Docker engine, no image...). The message says how to fix it."""


class Job(BaseModel):
    """One program execution.

    `files` are written into a fresh, private, writable work directory which is the current
    directory of the process; `argv[0]` is usually "python3". Nothing else of the host is visible
    except the read-only system needed to run Python.
    """

    files: dict[str, str] = Field(default_factory=dict)
    argv: list[str]
    stdin: str = ""
    time_limit_s: float = 6.0  # CPU seconds; the wall-clock backstop is a multiple (supervisor.wall_limit_s)
    memory_limit_mb: int = 1024
    output_limit_bytes: int = 1 << 20


class ExecResult(BaseModel):
    stdout: str = ""
    stderr: str = ""
    exit_code: int | None = None  # None when killed by the sandbox
    timed_out: bool = False  # a time limit ended it: `time_limit_hit` says which
    time_limit_hit: Literal["cpu", "wall"] | None = None  # the CPU time limit, or the wall-clock backstop
    cpu_s: float | None = None  # CPU seconds (user + system) the program used, when the backend measured it
    memory_exceeded: bool = False  # best effort: an allocation failure or an OOM kill
    output_truncated: bool = False  # stdout/stderr exceeded output_limit_bytes
    wall_s: float = 0.0


class Sandbox(Protocol):
    name: str

    def run(self, job: Job) -> ExecResult:
        """Run one job to completion, kill everything it started, remove everything it wrote."""
        ...

    def close(self) -> None:
        """Release pooled resources (containers...)."""
        ...

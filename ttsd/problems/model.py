"""The pydantic model of one problem (the `problem.json` format)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ProblemKind = Literal["stdin", "functional", "assert"]


class TestCase(BaseModel):
    """One test.

    stdin: `input` is fed to the program's stdin, `output` is the expected stdout.
    functional: `input` holds one JSON value per line (one per argument), `output` the JSON result.
    assert: `input` is Python test code that calls `check(candidate)`; `output` is unused ("").
    """

    model_config = ConfigDict(extra="forbid")
    __test__ = False  # not a pytest class

    input: str
    output: str = ""


class Problem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    title: str = ""
    statement: str = Field(min_length=1)
    starter_code: str = ""
    kind: ProblemKind = "stdin"
    entry_point: str | None = None
    tests: list[TestCase] = Field(default_factory=list, description="visible: failures may be shown to the model")
    hidden_tests: list[TestCase] = Field(default_factory=list, description="judged, never shown")
    time_limit_s: float = Field(default=6.0, gt=0)
    memory_limit_mb: int = Field(default=1024, gt=0)
    difficulty: str | None = None
    source: str | None = None

"""Reporting a run's steps to the tools ML users watch runs with (`--report-to tensorboard`).

    RUN_DIR/tensorboard/events.out.tfevents.*   one scalar per quantity per step (x axis: the step)

`step_scalars` (pure) says what is written: every number of the StepRecord (loss, KL,
teacher−student gap, stale-weights gap, gradient norm, best tests passed, attempts, the step's
times and token counts), the step's verdict counts, whether the run has discovered (0/1), the numbers of the discovery likelihood on the step that discovered, and
every number in the record's `extra` (the EMA teacher's distance from the student, a copy
diagnostic, multi-turn's prompt tokens...), so a diagnostic added to StepRecord shows up without a
change here. A quantity a step does not have (None) is left out, not written as 0.

The writer is torch's `SummaryWriter`, which needs the `tensorboard` package (the `tensorboard`
extra); it is imported only when asked for, and its absence is a clear error before the run starts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ttsd.runs import StepRecord, Summary

TENSORBOARD_DIR = "tensorboard"

# StepRecord field -> the tag it is shown under (grouped by TensorBoard at the "/"); any other
# number of the record is shown as step/<field> (time_* as time/<field>, *_tokens as compute/<field>).
_STEP_TAGS = {
    "loss": "train/loss",
    "mean_reverse_kl": "train/kl",
    "grad_norm": "train/grad_norm",
    "teacher_logprob_gap": "diagnostics/teacher_student_gap",
    "stale_weights_gap": "diagnostics/stale_weights_gap",
    "best_tests_passed": "progress/best_tests_passed",
    "attempts": "progress/attempts",
}
_NOT_SCALARS = {"step", "verdicts", "extra", "discovery_likelihood"}


def _tag(field: str) -> str:
    if field in _STEP_TAGS:
        return _STEP_TAGS[field]
    if field.startswith("time_"):
        return f"time/{field}"
    if field.endswith("_tokens"):
        return f"compute/{field}"
    return f"step/{field}"


class ReportingUnavailable(RuntimeError):
    """The reporting backend asked for is not installed; the message says how to install it."""


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def step_scalars(record: StepRecord, summary: Summary) -> dict[str, float]:
    """The scalars of one step: tag -> value (only the quantities the step has)."""
    scalars: dict[str, float] = {}
    for field in type(record).model_fields:
        if field not in _NOT_SCALARS and (value := _number(getattr(record, field))) is not None:
            scalars[_tag(field)] = value
    for verdict, count in record.verdicts.items():
        scalars[f"verdicts/{verdict}"] = float(count)
    scalars["progress/discovered"] = float(summary.discovered)
    if record.discovery_likelihood is not None:
        for name, value in record.discovery_likelihood.model_dump().items():
            if (number := _number(value)) is not None:
                scalars[f"discovery/{name}"] = number
    for name, value in record.extra.items():
        if (number := _number(value)) is not None:
            scalars[f"extra/{name}"] = number
    return scalars


class TensorBoardReporter:
    """Writes every step's scalars as TensorBoard event files under RUN_DIR/tensorboard."""

    def __init__(self, run_dir: Path):
        require_reporter("tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(run_dir) / TENSORBOARD_DIR
        self._writer = SummaryWriter(log_dir=str(self.log_dir))

    def report(self, record: StepRecord, summary: Summary) -> None:
        for tag, value in step_scalars(record, summary).items():
            self._writer.add_scalar(tag, value, global_step=record.step)
        self._writer.flush()  # a crashed run keeps every step it reported

    def close(self) -> None:
        self._writer.close()


Progress = Callable[[StepRecord, Summary], None]


def require_reporter(report_to: str) -> None:
    """Raise ReportingUnavailable now, before anything slow, when `report_to`'s package is missing."""
    if report_to == "tensorboard":
        try:
            from torch.utils.tensorboard import SummaryWriter  # noqa: F401
        except ImportError as error:
            raise ReportingUnavailable(
                f"--report-to tensorboard needs the tensorboard package ({error}): pip install 'ttsd[tensorboard]'"
            ) from None


def make_reporter(report_to: str, run_dir: Path) -> TensorBoardReporter | None:
    """The reporter `report_to` names ("none": None)."""
    if report_to == "none":
        return None
    if report_to == "tensorboard":
        return TensorBoardReporter(run_dir)
    raise ValueError(f"unknown report_to {report_to!r} (none or tensorboard)")


def reporting(reporter: TensorBoardReporter | None, progress: Progress | None) -> Progress | None:
    """`progress`, and the reporter told of every step first."""
    if reporter is None:
        return progress

    def both(record: StepRecord, summary: Summary) -> None:
        reporter.report(record, summary)
        if progress is not None:
            progress(record, summary)

    return both

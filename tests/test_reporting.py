"""`--report-to tensorboard` (ttsd/reporting.py): which scalars a step gives, the event files read back,
and a whole `ttsd solve` of a pytest problem folder (sdpo, tiny model, two steps) that reports."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO
from ttsd.reporting import TENSORBOARD_DIR, TensorBoardReporter, make_reporter, step_scalars
from ttsd.runs import DiscoveryLikelihood, StepRecord, Summary


def read_events(log_dir) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the event files under `log_dir`: tag -> [(step, value)], read by TensorBoard itself."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars: dict[str, list[tuple[int, float]]] = {}
    for events in sorted(log_dir.glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend((e.step, e.value) for e in accumulator.Scalars(tag))
    return scalars


def summary(discovered: bool) -> Summary:
    return Summary(problem_id="p", method="sdpo", seed=0, discovered=discovered, discovery_k=3 if discovered else None,
                   attempts_used=4, budget=8, wall_s=1.0)


def test_step_scalars_are_the_records_numbers_and_leave_out_what_a_step_lacks():
    record = StepRecord(step=2, attempts=4, best_tests_passed=3, loss=0.25, mean_reverse_kl=0.125, stale_weights_gap=0.001,
                        teacher_logprob_gap=-0.5, time_step_s=2.0, sampled_tokens=64, verdicts={"wrong_answer": 2},
                        extra={"ema_weight_distance": 0.03, "copy_rate": 0.75, "note": "text"})
    scalars = step_scalars(record, summary(discovered=False))
    assert scalars["train/loss"] == 0.25 and scalars["train/kl"] == 0.125
    assert scalars["diagnostics/teacher_student_gap"] == -0.5 and scalars["diagnostics/stale_weights_gap"] == 0.001
    assert scalars["progress/best_tests_passed"] == 3 and scalars["progress/attempts"] == 4
    assert scalars["progress/discovered"] == 0.0 and scalars["verdicts/wrong_answer"] == 2
    assert scalars["time/time_step_s"] == 2.0 and scalars["compute/sampled_tokens"] == 64
    assert scalars["extra/ema_weight_distance"] == 0.03 and scalars["extra/copy_rate"] == 0.75
    assert "extra/note" not in scalars and "train/grad_norm" not in scalars  # text, and None, are left out
    found = record.model_copy(update={"discovery_likelihood": DiscoveryLikelihood(
        tokens=10, updates_before=1, initial_nats=-20.0, discovery_nats=-15.0, gain_nats=5.0,
        per_token_initial_nats=-2.0, per_token_discovery_nats=-1.5, per_token_gain_nats=0.5)})
    with_discovery = step_scalars(found, summary(discovered=True))
    assert with_discovery["progress/discovered"] == 1.0 and with_discovery["discovery/gain_nats"] == 5.0


def test_events_read_back_step_by_step(tmp_path):
    reporter = make_reporter("tensorboard", tmp_path)
    assert isinstance(reporter, TensorBoardReporter) and make_reporter("none", tmp_path) is None
    for step, loss in enumerate([1.5, 0.75]):
        reporter.report(StepRecord(step=step, attempts=2 * (step + 1), loss=loss, mean_reverse_kl=loss / 2), summary(discovered=step == 1))
    reporter.close()
    scalars = read_events(tmp_path / TENSORBOARD_DIR)
    assert scalars["train/loss"] == [(0, 1.5), (1, 0.75)]
    assert scalars["train/kl"] == [(0, 0.75), (1, 0.375)]
    assert scalars["progress/discovered"] == [(0, 0.0), (1, 1.0)]


@pytest.mark.slow
def test_solve_a_pytest_folder_with_sdpo_reports_every_step_to_tensorboard(tiny_model_dir, tmp_path):
    """The whole loop on the bundled pytest problem: sampling, judging with pytest in the sandbox,
    feedback, two SDPO steps, and the scalars of both steps in TensorBoard's files."""
    run_dir = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "ttsd", "solve", str(REPO / "problems" / "examples" / "count-vowels"), "--model", str(tiny_model_dir),
         "--backend", "hf", "--method", "sdpo", "--budget", "4", "--batch-size", "2", "--max-tokens", "16",
         "--report-to", "tensorboard", "--out", str(run_dir)],
        capture_output=True, text=True, cwd=REPO, timeout=600,
    )
    assert done.returncode == 1, done.stderr[-3000:]  # a random tiny model spends its budget
    import json

    attempts = [json.loads(line) for line in (run_dir / "attempts.jsonl").read_text().splitlines()]
    assert len(attempts) == 4 and all(a["tests_total"] == 9 for a in attempts)  # the collected pytest tests
    scalars = read_events(run_dir / TENSORBOARD_DIR)
    assert [step for step, _ in scalars["progress/attempts"]] == [0, 1]
    assert [value for _, value in scalars["progress/attempts"]] == [2.0, 4.0]
    assert {"train/loss", "train/kl", "diagnostics/teacher_student_gap", "progress/best_tests_passed"} <= set(scalars)
    steps = [json.loads(line) for line in (run_dir / "steps.jsonl").read_text().splitlines()]
    # the budget's last batch learns nothing (no update could be used), so only step 0 has a loss
    assert [value for _, value in scalars["train/loss"]] == pytest.approx([s["loss"] for s in steps if s["loss"] is not None], rel=1e-6)

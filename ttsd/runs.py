"""Run directories: the result files of one run of one method on one problem.

Owner: loop helper. The record models are the contract with `ttsd bench` / `ttsd compare`.

    RUN_DIR/config.json     resolved config, model, seeds, package versions
    RUN_DIR/attempts.jsonl  one AttemptRecord per line, flushed as written
    RUN_DIR/steps.jsonl     one StepRecord per line
    RUN_DIR/summary.json    Summary (written at the end)
    RUN_DIR/solution.py     when discovered
    RUN_DIR/adapter/        latest adapter; RUN_DIR/adapter_at_discovery/
"""

from __future__ import annotations

from pydantic import BaseModel


class AttemptRecord(BaseModel):
    k: int  # 1-based position in the run: attempts numbered in order within a batch
    step: int
    response: str
    code: str | None
    verdict: str
    tests_passed: int
    tests_total: int
    feedback: str
    num_tokens: int
    finish_reason: str


class StepRecord(BaseModel):
    step: int
    attempts: int  # attempts used so far, after this step
    loss: float | None = None
    mean_kl: float | None = None
    grad_norm: float | None = None
    logprob_gap: float | None = None  # mean |trainer - sampler| log-prob of sampled tokens (stale-weights alarm)
    time_sample_s: float = 0.0
    time_judge_s: float = 0.0
    time_score_s: float = 0.0
    time_train_s: float = 0.0
    time_sync_s: float = 0.0
    extra: dict = {}


class Summary(BaseModel):
    problem_id: str
    method: str
    seed: int
    discovered: bool
    discovery_k: int | None  # None when the budget ran out (right-censored at attempts_used)
    attempts_used: int
    budget: int
    wall_s: float

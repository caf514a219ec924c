"""One SDPO learning step on a judged batch: what `Sdpo.run_step` runs and what benchmarks measure.

    settings = LearnSettings.from_config(config)
    result = learn_from_batch(policy, teacher, optimizer, batch, settings)

For each of `settings.optimizer_steps` optimizer steps, with N the response tokens of the batch:

    zero the gradients
    for each micro-batch g of attempts (padded tokens ≤ max_batch_tokens):
        student = score(student prompt ⊕ y, with graph)             log π_S at its top-K ids and at y_t
        teacher = teacher.scores(context ⊕ y, at the student's ids)  log π_T at the same ids and at y_t
        L_g = Σ_{t∈g} m_t w_t D(s_t, q_t) / N
        L_g.backward()                                              g's graph is freed here
    clip the gradient norm; optimizer.step(); teacher.update()

Exactness: the loss is a token mean over the whole batch, L = Σ_t m w D / N = Σ_g L_g, and the
gradient is linear, so Σ_g ∇L_g = ∇L — the gradient of one backward over the whole batch, while
at most one micro-batch's graph (its checkpointed activations) is alive at a time. The memory of a
step grows with the micro-batch, not with the number of attempts.

Order inside a micro-batch: the teacher is evaluated at the student's top-K ids, so the student's
forward goes first and its ids feed the teacher's no-grad pass, which runs between the student's
forward and its backward and keeps only (tokens, K) log-probs. This costs no extra forward pass;
finding the ids first in a separate no-grad student pass would add a fourth forward over every
token. (The EMA teacher's weights are swapped in for its pass and the student's restored bit for
bit before backward: `ttsd.sdpo.teacher.EmaTeacher.swapped_in`.)

Importance weights (optimizer_steps > 1): w_t = min(exp(log π_now(y_t) − log π_0(y_t)), clip) with
log π_0 the trainer's own log-prob of y_t recorded in the first optimizer step, under the weights
that sampled the batch — so w = 1 exactly in that step. The sampler's log-probs (another kernel,
bf16 rounding, nucleus renormalisation under top_p < 1) only feed the stale-weights alarm:

    stale_weights_gap = Σ_t m_t |log π_trainer(y_t) − log π_sampler(y_t)| / N     (first step)

The result keeps, per attempt, the trainer's and the teacher's log-probs of the sampled tokens in
the first step (`student_logprobs`, `teacher_logprobs`): diagnostics read them off for free.
"""

from __future__ import annotations

import time
from typing import Any, Literal, Sequence

from pydantic import BaseModel, Field, model_validator

from ttsd.engine.scorer import MAX_BATCH_TOKENS
from ttsd.sdpo.loss import Divergence


class LearnSettings(BaseModel):
    """The loss and optimizer settings of a step (from `SolveConfig`, see `from_config`)."""

    temperature: float = Field(gt=0)
    top_k: int = Field(ge=1)
    loss: Literal["logit", "token"]
    divergence: Divergence
    jsd_alpha: float
    optimizer_steps: int = Field(ge=1)
    importance_clip: float = Field(gt=0)
    grad_clip: float = Field(gt=0)
    max_batch_tokens: int = Field(MAX_BATCH_TOKENS, ge=1)

    @classmethod
    def from_config(cls, config: Any, **overrides: Any) -> "LearnSettings":
        """The settings a `ttsd.config.SolveConfig` asks for."""
        names = ("temperature", "top_k", "loss", "divergence", "jsd_alpha", "optimizer_steps",
                 "importance_clip", "grad_clip")
        return cls(**{**{name: getattr(config, name) for name in names}, **overrides})


class LearningBatch(BaseModel):
    """The attempts that carry a learning signal, as token ids."""

    student_prompts: list[list[int]]
    teacher_contexts: list[list[int]]
    responses: list[list[int]]
    sampler_logprobs: list[list[float]] | None = None  # per sampled token, as the sampler reported

    @model_validator(mode="after")
    def _rows_match(self) -> "LearningBatch":
        rows = len(self.responses)
        if not rows or len(self.student_prompts) != rows or len(self.teacher_contexts) != rows:
            raise ValueError("a learning batch needs one student prompt and one teacher context per response")
        if any(not r for r in self.responses):
            raise ValueError("every response of a learning batch has tokens")
        if self.sampler_logprobs is not None and [len(v) for v in self.sampler_logprobs] != [len(r) for r in self.responses]:
            raise ValueError("one sampler log-prob per response token")
        return self


class LearnResult(BaseModel):
    """What one call did. Loss statistics are those of the last optimizer step."""

    loss: float
    mean_reverse_kl: float
    mean_weight: float
    grad_norm: float  # before clipping, last optimizer step
    num_tokens: int
    stale_weights_gap: float | None  # mean |trainer − sampler| log-prob of the sampled tokens, first step
    time_score_s: float  # forward passes (student with graph, teacher)
    time_train_s: float  # backward passes, clipping, optimizer and teacher updates
    student_logprobs: list[list[float]]  # log π_S(y_t), first step (the weights that sampled y)
    teacher_logprobs: list[list[float]]  # log π_T(y_t), first step
    # compute, as token-passes over whole rows (prompt or context + response; the scorer's shared
    # prefix is not subtracted), summed over optimizer steps:
    scored_tokens: int = 0  # forward passes: the student's, plus each of the teacher's (`forward_passes`)
    trained_tokens: int = 0  # the student's backward passes (gradient checkpointing recomputes inside them)


def stale_weights_gap_sum(trainer_logprobs: Any, mask: Any, sampler_logprobs: Sequence[Sequence[float]]) -> Any:
    """Σ_t m_t |log π_trainer(y_t) − log π_sampler(y_t)| over a padded (B, T) batch, as a tensor on
    the trainer's device: the sampler's rows (Python floats) are moved there, not the other way."""
    import torch

    sampler = torch.zeros(trainer_logprobs.shape, dtype=torch.float32)
    for row, values in enumerate(sampler_logprobs):
        sampler[row, : len(values)] = torch.tensor(values, dtype=torch.float32)
    sampler = sampler.to(device=trainer_logprobs.device)
    gap = (trainer_logprobs.detach().float() - sampler).abs()
    return torch.where(mask.bool(), gap, torch.zeros_like(gap)).sum()


def _padded_rows(rows: list[Any], width: int) -> Any:
    """(len(rows), width) tensor of 1-D tensors on one device, zero-padded on the right."""
    out = rows[0].new_zeros((len(rows), width))
    for index, row in enumerate(rows):
        out[index, : len(row)] = row
    return out


def learn_from_batch(policy: Any, teacher: Any, optimizer: Any, batch: LearningBatch, settings: LearnSettings) -> LearnResult:
    """`settings.optimizer_steps` optimizer steps on `batch` (see the module docstring).

    policy: `ttsd.engine.policy.Policy`; teacher: a `ttsd.sdpo.teacher.Teacher`; optimizer: over
    `policy.trainable_parameters()`.
    """
    import torch

    from ttsd.engine.hardware import synchronize
    from ttsd.engine.scorer import micro_batches, score_tokens
    from ttsd.sdpo.loss import LossStats, importance_weights, sdpo_loss, token_level_loss

    logit_level = settings.loss == "logit"
    total_tokens = sum(len(r) for r in batch.responses)
    groups = micro_batches(
        [len(p) + len(r) for p, r in zip(batch.student_prompts, batch.responses)], settings.max_batch_tokens
    )
    first_student: list[Any] = [None] * len(batch.responses)  # log π_0(y_t) per row, on the trainer's device
    first_teacher: list[Any] = [None] * len(batch.responses)
    gap_sum = None
    time_score = time_train = 0.0
    grad_norm, parts = 0.0, []
    for optimizer_step in range(settings.optimizer_steps):
        optimizer.zero_grad(set_to_none=True)
        parts = []
        for group in groups:
            synchronize(policy.device)  # the timers count finished GPU work, not kernel launches
            started = time.monotonic()
            responses = [batch.responses[i] for i in group]
            student = score_tokens(
                policy.model, [batch.student_prompts[i] for i in group], responses,
                temperature=settings.temperature, top_k=settings.top_k if logit_level else 0, grad=True,
                max_batch_tokens=settings.max_batch_tokens,
            )
            scored = teacher.scores(
                policy, [batch.teacher_contexts[i] for i in group], responses,
                temperature=settings.temperature, given_ids=student.topk_ids if logit_level else None,
            )
            synchronize(policy.device)
            scored_at = time.monotonic()
            if optimizer_step == 0:
                for row, i in enumerate(group):
                    first_student[i] = student.response_logprobs[row, : len(batch.responses[i])].detach()
                    first_teacher[i] = scored.response_logprobs[row, : len(batch.responses[i])]
                if batch.sampler_logprobs is not None:
                    part = stale_weights_gap_sum(student.response_logprobs, student.mask, [batch.sampler_logprobs[i] for i in group])
                    gap_sum = part if gap_sum is None else gap_sum + part
            weights = None
            if optimizer_step > 0:
                at_sampling = _padded_rows([first_student[i] for i in group], student.response_logprobs.shape[1])
                weights = importance_weights(student.response_logprobs, at_sampling, clip=settings.importance_clip)
            if logit_level:
                loss, stats = sdpo_loss(
                    student.topk_logprobs, scored.given_logprobs, student.mask, divergence=settings.divergence,
                    alpha=settings.jsd_alpha, weights=weights, token_count=total_tokens,
                )
            else:
                loss, stats = token_level_loss(
                    student.response_logprobs, scored.response_logprobs, student.mask, weights, token_count=total_tokens
                )
            loss.backward()
            parts.append(stats)
            synchronize(policy.device)
            time_score += scored_at - started
            time_train += time.monotonic() - scored_at
        started = time.monotonic()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(policy.trainable_parameters(), settings.grad_clip))
        optimizer.step()
        teacher.update()
        synchronize(policy.device)
        time_train += time.monotonic() - started
    stats = LossStats.combine(parts)
    student_tokens = sum(len(p) + len(r) for p, r in zip(batch.student_prompts, batch.responses))
    teacher_tokens = sum(len(c) + len(r) for c, r in zip(batch.teacher_contexts, batch.responses))
    teacher_passes = teacher.forward_passes
    return LearnResult(
        scored_tokens=settings.optimizer_steps * (student_tokens + teacher_passes * teacher_tokens),
        trained_tokens=settings.optimizer_steps * student_tokens,
        loss=stats.loss, mean_reverse_kl=stats.mean_reverse_kl, mean_weight=stats.mean_weight, grad_norm=grad_norm,
        num_tokens=stats.num_tokens,
        stale_weights_gap=None if gap_sum is None else float(gap_sum) / total_tokens,
        time_score_s=time_score, time_train_s=time_train,
        student_logprobs=[row.float().cpu().tolist() for row in first_student],
        teacher_logprobs=[row.float().cpu().tolist() for row in first_teacher],
    )

"""The SDPO self-distillation loss: pure torch functions, the whole math in one module.

Notation, per response position t of attempt y (shapes (B, T) or (B, T, K)):

    π_S(· | x, y<t)      the student: the policy under the plain task prompt x (gradients flow)
    π_T(· | x, f, y<t)   the self-teacher: the same model (or its EMA / trust-region copy) prompted
                         with x plus feedback f and/or a peer's passing solution (no gradient)

Both are full-vocabulary distributions of the *sampling* logits: the scorer divides the logits by
the sampling temperature τ before the log-softmax, log π(v) = z_v/τ − logsumexp(z/τ), so the loss
distils the distribution the sampler actually draws from (τ = 1.0 by default). The inputs here are
those full-vocabulary log-probs gathered at a few token ids; nothing here renormalises over K.

Logit-level loss (the paper's, §2, eq. 2, with the top-K approximation of §2.2):

    ids_t     = the student's top-K token ids at position t
    s_t       = [log π_S(v) for v in ids_t] ++ [log(1 − Σ_v π_S(v))]        (K + 1 buckets)
    q_t       = [log π_T(v) for v in ids_t] ++ [log(1 − Σ_v π_T(v))]
    L         = Σ_t m_t · w_t · D(s_t, q_t) / Σ_t m_t                           (token mean)

Micro-batches: with N = Σ_t m_t over the whole batch, L = Σ_g Σ_{t∈g} m_t w_t D_t / N, a sum of
per-micro-batch terms; `token_count=N` makes a call on micro-batch g return its term, so backward
per micro-batch adds up to the whole batch's gradient exactly (`ttsd.sdpo.learn`).

The tail bucket keeps both vectors proper distributions, so D ≥ 0 and D = 0 iff they agree; with
K = |vocab| it is empty and D is the exact divergence. m is the response mask, w the optional
importance weights (below). D is one of

    reverse KL  KL(S ‖ T) = Σ_i S_i (log S_i − log T_i)        default, the paper's choice
    forward KL  KL(T ‖ S) = Σ_i T_i (log T_i − log S_i)
    JSD_α       α KL(T ‖ M) + (1 − α) KL(S ‖ M),  M = α T + (1 − α) S,   0 < α < 1

JSD_α is the generalised Jensen-Shannon divergence of Agarwal et al. (GKD, 2024) with P = teacher,
the convention of the SDPO reference code (lasgroup/SDPO, `compute_self_distillation_loss`, whose
α = 0 means forward KL and α = 1 reverse KL): JSD_α / α → KL(T ‖ S) as α → 0, JSD_α / (1 − α) →
KL(S ‖ T) as α → 1, and α = ½ is the ordinary symmetric Jensen-Shannon divergence (≤ log 2).

Gradient of the reverse KL w.r.t. the student's logits z (the distribution p = softmax(z) over the
buckets, q fixed):  ∂/∂z_i KL(p ‖ q) = p_i (log p_i − log q_i − KL(p ‖ q)).

Token-level loss (the sampled-token estimator of Proposition 2.1): with y_t the sampled token,

    A_t = log π_T(y_t) − log π_S(y_t)          (detached: an advantage, as in policy gradients)
    L   = − Σ_t m_t · w_t · A_t · log π_S(y_t) / Σ_t m_t

Since E_{y~π_S}[∇ log π_S(y)] = 0, E[∇L_t] = E[(log π_S(y) − log π_T(y)) ∇ log π_S(y)]
= ∇ KL(π_S ‖ π_T): minimising L descends the reverse KL, in expectation, at the cost of one log-prob
per position instead of K.

Importance weights, for more than one optimizer step on a batch (after the first step the batch is
no longer on-policy): w_t = min(exp(log π_now(y_t) − log π_sampling(y_t)), clip), detached, with
clip = 2 by default (the reference code's `is_clip`). log π_sampling should be the trainer's own
log-prob of y_t under the weights that generated it (recorded at the first step), not the sampler's
(a different kernel; their gap is a stale-weights alarm, not a weight).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

Divergence = Literal["reverse_kl", "forward_kl", "jsd"]
DIVERGENCES: tuple[str, ...] = ("reverse_kl", "forward_kl", "jsd")

# log(Σ top-K p) is clamped just below 0 so that log(1 − Σ p) stays finite when the top-K hold
# (numerically) all the mass; the tail bucket then carries ~1e-7 of probability in both
# distributions and contributes ~nothing.
_LOG_MASS_MAX = -1e-7
# Bound on the log importance ratio before exp: a weight of e^20 is already far past any clip.
_LOG_RATIO_BOUND = 20.0


@dataclass(frozen=True)
class LossStats:
    """What one loss evaluation reports (plain floats, for steps.jsonl and the progress bar).

    loss:             weighted token mean of the chosen divergence over this call's tokens (the
                      value returned, unless `token_count` scaled it as one micro-batch's share)
    mean_reverse_kl:  token mean of KL(student ‖ teacher) — over the K + 1 buckets for the
                      logit-level loss, the sampled-token estimate log π_S(y) − log π_T(y) for
                      the token-level loss; unweighted, whatever divergence is optimised
    mean_divergence:  token mean of the optimised divergence, unweighted
    num_tokens:       response tokens that counted (mask sum)
    student_topk_mass / teacher_topk_mass: mean probability inside the student's top-K
                      (how much the tail bucket summarises; NaN for the token-level loss)
    mean_weight:      mean importance weight over counted tokens (1.0 without weights)
    """

    loss: float
    mean_reverse_kl: float
    mean_divergence: float
    num_tokens: int
    student_topk_mass: float = math.nan
    teacher_topk_mass: float = math.nan
    mean_weight: float = 1.0

    @classmethod
    def combine(cls, parts: list["LossStats"]) -> "LossStats":
        """The stats of a batch from those of its micro-batches: token-weighted means, summed counts."""
        total = sum(p.num_tokens for p in parts)
        if total == 0:
            raise ValueError("no tokens in any micro-batch")

        def mean(field: str) -> float:
            return sum(getattr(p, field) * p.num_tokens for p in parts) / total

        fields = ("loss", "mean_reverse_kl", "mean_divergence", "student_topk_mass", "teacher_topk_mass", "mean_weight")
        return cls(num_tokens=total, **{field: mean(field) for field in fields})


def with_tail(topk_logprobs: torch.Tensor) -> torch.Tensor:
    """(..., K) full-vocabulary log-probs → (..., K + 1) with the tail bucket log(1 − Σ p).

    log(1 − Σ p) = log(−expm1(logsumexp(log p))), with logsumexp clamped below 0 (see
    `_LOG_MASS_MAX`): stable both when the top-K hold almost all the mass and when they hold little.
    """
    log_mass = torch.logsumexp(topk_logprobs, dim=-1, keepdim=True).clamp(max=_LOG_MASS_MAX)
    tail = torch.log(-torch.expm1(log_mass))
    return torch.cat([topk_logprobs, tail], dim=-1)


def kl_divergence(p_log: torch.Tensor, q_log: torch.Tensor) -> torch.Tensor:
    """KL(P ‖ Q) = Σ_i P_i (log P_i − log Q_i) over the last dimension (log-probs in, (...,) out)."""
    return (p_log.exp() * (p_log - q_log)).sum(dim=-1)


def generalized_jsd(student_log: torch.Tensor, teacher_log: torch.Tensor, alpha: float) -> torch.Tensor:
    """JSD_α(S, T) = α KL(T ‖ M) + (1 − α) KL(S ‖ M),  M = α T + (1 − α) S,  for 0 < α < 1."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"JSD needs 0 < alpha < 1 (use forward_kl for 0, reverse_kl for 1), got {alpha}")
    mixture_log = torch.logaddexp(teacher_log + math.log(alpha), student_log + math.log1p(-alpha))
    return alpha * kl_divergence(teacher_log, mixture_log) + (1.0 - alpha) * kl_divergence(student_log, mixture_log)


def divergence_per_token(
    student_log: torch.Tensor,
    teacher_log: torch.Tensor,
    divergence: Divergence = "reverse_kl",
    alpha: float = 0.5,
) -> torch.Tensor:
    """D(S, T) over the last dimension of two (..., buckets) log-prob tensors; (...,) out."""
    if divergence == "reverse_kl":
        return kl_divergence(student_log, teacher_log)
    if divergence == "forward_kl":
        return kl_divergence(teacher_log, student_log)
    if divergence == "jsd":
        return generalized_jsd(student_log, teacher_log, alpha)
    raise ValueError(f"unknown divergence {divergence!r}; choose one of {', '.join(DIVERGENCES)}")


def masked_token_mean(values: torch.Tensor, mask: torch.Tensor, token_count: int | None = None) -> torch.Tensor:
    """Σ values·mask / Σ mask over every position (0 when the mask is empty); with `token_count`
    the denominator is that count instead (this call sees one micro-batch of a larger batch)."""
    keep = mask.bool()
    # where, not multiply: a NaN at a padding position must not leak into the mean
    total = torch.where(keep, values, torch.zeros_like(values)).sum()
    if token_count is not None:
        return total / max(token_count, 1)
    return total / keep.sum().clamp(min=1).to(values.dtype)


def importance_weights(
    logprobs_now: torch.Tensor, logprobs_at_sampling: torch.Tensor, clip: float = 2.0
) -> torch.Tensor:
    """w = min(exp(log π_now(y) − log π_sampling(y)), clip), detached; per sampled token (B, T)."""
    if clip <= 0:
        raise ValueError(f"importance-weight clip must be positive, got {clip}")
    log_ratio = (logprobs_now - logprobs_at_sampling).detach().clamp(-_LOG_RATIO_BOUND, _LOG_RATIO_BOUND)
    return log_ratio.exp().clamp(max=clip)


def _check_shapes(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor, leading: int) -> None:
    if student.shape != teacher.shape:
        raise ValueError(f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)} shapes differ")
    if tuple(mask.shape) != tuple(student.shape[:leading]):
        raise ValueError(f"mask {tuple(mask.shape)} does not match the positions {tuple(student.shape[:leading])}")


def _mask_out(logprobs: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    # Padding positions may hold anything (-inf, garbage); replacing them by one uniform
    # distribution, the same in student and teacher, keeps the loss and its gradient finite there.
    uniform = torch.full_like(logprobs, -math.log(logprobs.shape[-1] + 1))
    return torch.where(keep.unsqueeze(-1), logprobs, uniform)


def _clean_weights(weights: torch.Tensor | None, keep: torch.Tensor) -> torch.Tensor | None:
    if weights is None:
        return None
    if tuple(weights.shape) != tuple(keep.shape):
        raise ValueError(f"weights {tuple(weights.shape)} do not match the mask {tuple(keep.shape)}")
    return torch.where(keep, weights.detach(), torch.ones_like(weights))


def sdpo_loss(
    student_topk_logprobs: torch.Tensor,
    teacher_topk_logprobs: torch.Tensor,
    mask: torch.Tensor,
    divergence: Divergence = "reverse_kl",
    alpha: float = 0.5,
    weights: torch.Tensor | None = None,
    tail: bool = True,
    token_count: int | None = None,
) -> tuple[torch.Tensor, LossStats]:
    """The logit-level SDPO loss over the student's top-K tokens plus the tail bucket.

    student_topk_logprobs: (B, T, K) log π_S at the student's top-K ids (with gradient)
    teacher_topk_logprobs: (B, T, K) log π_T at the same ids (detached here regardless)
    mask:                  (B, T) response tokens that count (bool or 0/1)
    divergence, alpha:     see the module docstring; alpha is used by "jsd" only
    weights:               (B, T) importance weights (`importance_weights`), detached here
    tail:                  add the tail bucket (K + 1 buckets); False renormalises over the K ids
    token_count:           N of the whole batch when this is one micro-batch of it (default Σ m)
    Returns (loss, stats): L = Σ m·w·D / N; stats are means over this call's tokens.
    """
    _check_shapes(student_topk_logprobs, teacher_topk_logprobs, mask, leading=2)
    keep = mask.bool()
    student_k = _mask_out(student_topk_logprobs, keep)
    teacher_k = _mask_out(teacher_topk_logprobs.detach(), keep)
    if tail:
        student, teacher = with_tail(student_k), with_tail(teacher_k)
    else:
        student = student_k - torch.logsumexp(student_k, dim=-1, keepdim=True)
        teacher = teacher_k - torch.logsumexp(teacher_k, dim=-1, keepdim=True)

    per_token = divergence_per_token(student, teacher, divergence, alpha)
    weights = _clean_weights(weights, keep)
    weighted = per_token if weights is None else per_token * weights
    loss = masked_token_mean(weighted, keep, token_count)

    with torch.no_grad():
        reverse = per_token if divergence == "reverse_kl" else kl_divergence(student, teacher)
        stats = LossStats(
            loss=float(masked_token_mean(weighted, keep)),
            mean_reverse_kl=float(masked_token_mean(reverse, keep)),
            mean_divergence=float(masked_token_mean(per_token, keep)),
            num_tokens=int(keep.sum()),
            student_topk_mass=float(masked_token_mean(student_k.exp().sum(-1), keep)),
            teacher_topk_mass=float(masked_token_mean(teacher_k.exp().sum(-1), keep)),
            mean_weight=1.0 if weights is None else float(masked_token_mean(weights, keep)),
        )
    return loss, stats


def token_level_loss(
    student_sampled_logprobs: torch.Tensor,
    teacher_sampled_logprobs: torch.Tensor,
    mask: torch.Tensor,
    weights: torch.Tensor | None = None,
    token_count: int | None = None,
) -> tuple[torch.Tensor, LossStats]:
    """The sampled-token SDPO loss: L = −Σ m·w·A·log π_S(y) / N, A = (log π_T(y) − log π_S(y)) detached.

    student_sampled_logprobs: (B, T) log π_S(y_t) of the sampled tokens (with gradient)
    teacher_sampled_logprobs: (B, T) log π_T(y_t) under the teacher context
    token_count: N of the whole batch when this is one micro-batch of it (default Σ m)
    Its expected gradient is ∇ KL(π_S ‖ π_T) (Proposition 2.1): reverse KL only.
    """
    _check_shapes(student_sampled_logprobs, teacher_sampled_logprobs, mask, leading=2)
    keep = mask.bool()
    student = torch.where(keep, student_sampled_logprobs, torch.zeros_like(student_sampled_logprobs))
    teacher = torch.where(keep, teacher_sampled_logprobs.detach(), torch.zeros_like(student))
    advantage = (teacher - student).detach()
    per_token = -advantage * student
    weights = _clean_weights(weights, keep)
    weighted = per_token if weights is None else per_token * weights
    loss = masked_token_mean(weighted, keep, token_count)

    with torch.no_grad():
        kl_estimate = masked_token_mean(-advantage, keep)
        stats = LossStats(
            loss=float(masked_token_mean(weighted, keep)),
            mean_reverse_kl=float(kl_estimate),
            mean_divergence=float(kl_estimate),
            num_tokens=int(keep.sum()),
            mean_weight=1.0 if weights is None else float(masked_token_mean(weights, keep)),
        )
    return loss, stats

"""The self-teacher: which weights score the teacher context — an EMA of the student, the frozen
initial model, or the trust-region lerp of the two.

The self-teacher is the policy itself under a richer prompt (see `prompts.teacher_messages`). Using
the *current* student as teacher lets the target drift with every step, so the paper regularises
it (SDPO §2.3) in one of these ways, each a `Teacher` with one interface:

    teacher = make_teacher("ema", policy, ema_rate=0.01)
    scores = teacher.scores(policy, contexts, responses, temperature=τ, given_ids=ids)   # no grad
    ... student loss, backward, optimizer.step() ...
    teacher.update()                                                                  # after each step

EMA teacher (default, rate ρ = 0.01): a copy of the trainable weights that trails the student,

    θ_T ← (1 − ρ) θ_T + ρ θ_S        after every optimizer step     (= lerp(θ_T, θ_S, ρ))

ρ = 1 makes the teacher the current student. Here the trainable weights are the LoRA adapter, so
the teacher is itself a LoRA adapter whose A and B matrices are the EMAs of the student's (its
weight delta B_T A_T is close to, not exactly, the EMA of B_S A_S — the natural analogue of the
paper's full-weight EMA, at the cost of a few MB). `EmaTeacher` keeps that copy in float32 (a 1%
update is below bf16's resolution) and swaps it into the model for the no-grad teacher pass.

Frozen teacher (`--teacher frozen`, or the EMA at ρ = 0, which with LoRA's zero-initialised B is
the same thing): the base model, i.e. the adapter switched off.

Trust-region teacher: no second copy; the teacher's logits are interpolated between the frozen
reference (the adapter switched off) and the current student, both on the teacher context:

    z_T = lerp(z_ref, z_S, α) = (1 − α) z_ref + α z_S,     log π_T = log_softmax(z_T / τ)

α = 0 is the reference, α = 1 the student. The lerp must happen before the full-vocabulary
normalisation. Since the output head is linear (no bias, no adapter on it), lerping the final
hidden states gives the same logits, W lerp(h_ref, h_S, α) = lerp(W h_ref, W h_S, α): the scorer
lerps the (B, L, H) hidden states of its two backbone passes and never holds (B, L, V) logits
(`ttsd.engine.scorer.score_tokens(trust_region_alpha=α)`).

References: Hübotter et al., "Reinforcement Learning via Self-Distillation", arXiv 2601.20802, §2.3;
the reference implementation lasgroup/SDPO (`_update_teacher`, `TrustRegionTeacher`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal, Protocol

import torch

from ttsd.engine.lora import adapter_parameters

TeacherKind = Literal["ema", "frozen", "trust-region"]


def ema_update(
    teacher: Mapping[str, torch.Tensor], student: Mapping[str, torch.Tensor], rate: float
) -> dict[str, torch.Tensor]:
    """θ_T ← (1 − rate) θ_T + rate θ_S for every named tensor; new tensors, inputs untouched.

    The result keeps the teacher's dtype and device. rate 0 returns copies of the teacher,
    rate 1 copies of the student.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"EMA rate must be in [0, 1], got {rate}")
    if set(teacher) != set(student):
        missing, extra = sorted(set(student) - set(teacher)), sorted(set(teacher) - set(student))
        raise ValueError(f"teacher and student hold different tensors (missing {missing[:3]}, extra {extra[:3]})")
    updated = {}
    for name, theta_t in teacher.items():
        theta_s = student[name].detach().to(device=theta_t.device, dtype=theta_t.dtype)
        updated[name] = torch.lerp(theta_t.detach(), theta_s, rate)
    return updated


class Teacher(Protocol):
    """What the learning step needs from a teacher."""

    forward_passes: int  # model passes over each scored row (the compute records count them)

    def scores(self, policy: Any, contexts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], *,
               temperature: float, given_ids: Any = None) -> Any:
        """`ttsd.engine.scorer.TokenScores` of the responses under the teacher contexts, no gradients."""
        ...

    def update(self) -> None:
        """Called after every optimizer step."""
        ...

    def state_dict(self) -> dict[str, Any] | None: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


def _score(model: Any, contexts: Any, responses: Any, temperature: float, given_ids: Any, **options: Any) -> Any:
    from ttsd.engine.scorer import score_tokens

    return score_tokens(model, contexts, responses, temperature=temperature, top_k=0, given_ids=given_ids,
                        grad=False, **options)


class EmaTeacher:
    """A float32 EMA copy of a PEFT model's student adapter, swapped into the model for scoring."""

    forward_passes = 1

    def __init__(self, model: torch.nn.Module, rate: float = 0.01, adapter_name: str = "default"):
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"EMA rate must be in [0, 1], got {rate}")
        self.rate = rate
        self._student = adapter_parameters(model, adapter_name)
        self._teacher = {name: p.detach().to(torch.float32).clone() for name, p in self._student.items()}

    def scores(self, policy: Any, contexts: Any, responses: Any, *, temperature: float, given_ids: Any = None) -> Any:
        with self.swapped_in():
            return _score(policy.model, contexts, responses, temperature, given_ids)

    def update(self) -> None:
        """θ_T ← lerp(θ_T, θ_S, rate): call after each optimizer step."""
        if self.rate > 0.0:
            self._teacher = ema_update(self._teacher, self._student, self.rate)

    def weights(self) -> dict[str, torch.Tensor]:
        """The teacher's adapter tensors (float32), keyed as `ttsd.engine.lora.adapter_parameters`."""
        return dict(self._teacher)

    def max_abs_difference(self) -> float:
        """max |θ_T − θ_S| over all adapter entries: 0 until the student moves."""
        return max(
            (self._teacher[n] - p.detach().to(torch.float32)).abs().max().item() for n, p in self._student.items()
        )

    @contextmanager
    def swapped_in(self) -> Iterator[None]:
        """Within the block the model computes the teacher (no gradients); the student comes back exactly.

        The copies go through `.data`, outside autograd, on purpose: a student graph built before
        the swap still backpropagates correctly afterwards, because the values it saved are
        restored bit for bit before anyone calls backward (the learning step scores the teacher
        between a micro-batch's student forward and its backward). The Parameter objects stay the
        same, so the optimizer's state is untouched.
        """
        saved = {name: p.data.clone() for name, p in self._student.items()}
        try:
            for name, p in self._student.items():
                p.data.copy_(self._teacher[name])
            with torch.no_grad():
                yield
        finally:
            for name, p in self._student.items():
                p.data.copy_(saved[name])

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: the rate and the teacher tensors (CPU)."""
        return {"rate": self.rate, "weights": {name: t.detach().cpu().clone() for name, t in self._teacher.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        weights = state["weights"]
        if set(weights) != set(self._teacher):
            raise ValueError("saved teacher weights do not match this model's adapter parameters")
        self.rate = float(state["rate"])
        self._teacher = {
            name: weights[name].to(device=self._teacher[name].device, dtype=torch.float32).clone() for name in weights
        }


class _StatelessTeacher:
    """A teacher with nothing to update or save: its weights are the model's own."""

    forward_passes = 1

    def update(self) -> None:
        pass

    def state_dict(self) -> None:
        return None

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass


class FrozenTeacher(_StatelessTeacher):
    """The initial model: the base weights with the adapter switched off."""

    def scores(self, policy: Any, contexts: Any, responses: Any, *, temperature: float, given_ids: Any = None) -> Any:
        with policy.base_weights() as model:
            return _score(model, contexts, responses, temperature, given_ids)


class TrustRegionTeacher(_StatelessTeacher):
    """lerp(initial model, current student, α) in logit space (see the module docstring)."""

    forward_passes = 2  # the reference's backbone pass and the student's

    def __init__(self, alpha: float):
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"trust-region alpha must be in [0, 1], got {alpha}")
        self.alpha = alpha

    def scores(self, policy: Any, contexts: Any, responses: Any, *, temperature: float, given_ids: Any = None) -> Any:
        return _score(policy.model, contexts, responses, temperature, given_ids, trust_region_alpha=self.alpha)


def make_teacher(kind: TeacherKind, policy: Any, ema_rate: float = 0.01, trust_region_alpha: float = 0.01) -> Teacher:
    """The teacher of `--teacher kind`; an EMA at rate 0 is the frozen initial model."""
    if kind == "trust-region":
        return TrustRegionTeacher(trust_region_alpha)
    if kind == "frozen" or ema_rate == 0:
        return FrozenTeacher()
    if kind == "ema":
        return EmaTeacher(policy.model, rate=ema_rate, adapter_name=getattr(policy, "adapter", "default"))
    raise ValueError(f"unknown teacher {kind!r}: use ema, frozen or trust-region")

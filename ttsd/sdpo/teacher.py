"""The self-teacher's weights: an EMA of the student's LoRA adapter, or the trust-region teacher.

The self-teacher is the policy itself under a richer prompt (see `prompts.teacher_messages`). Using
the *current* student as teacher lets the target drift with every step, so the paper regularises
it (SDPO §2.3) in one of two ways:

EMA teacher (default, rate ρ = 0.01): a second copy of the trainable weights that trails the
student,

    θ_T ← (1 − ρ) θ_T + ρ θ_S        after every optimizer step     (= lerp(θ_T, θ_S, ρ))

ρ = 0 keeps the initial teacher forever (with LoRA's zero-initialised B that is the base model);
ρ = 1 makes the teacher the current student. Here the trainable weights are the LoRA adapter, so
the teacher is itself a LoRA adapter whose A and B matrices are the EMAs of the student's (its
weight delta B_T A_T is close to, not exactly, the EMA of B_S A_S — the natural analogue of the
paper's full-weight EMA, at the cost of a few MB). `EmaTeacher` keeps that copy in float32 (a 1%
update is below bf16's resolution) and swaps it into the model for the no-grad teacher pass:

    teacher = EmaTeacher(peft_model, rate=0.01)
    with teacher.swapped_in():                 # the model now computes π_T; no gradients
        teacher_scores = score(teacher contexts, ...)
    ... student scores with gradients, loss, optimizer.step() ...
    teacher.update()                           # θ_T ← lerp(θ_T, θ_S, ρ)

(Alternatively keep the teacher as a second PEFT adapter, `Policy.add_adapter("teacher")`, score
under `Policy.using_adapter("teacher")`, and update it with `ema_update_`; same arithmetic.)

Trust-region teacher: no second copy; the teacher's logits are interpolated between the frozen
reference (the base model, i.e. the adapter disabled) and the current student, both evaluated on
the teacher context:

    z_T = lerp(z_ref, z_S, α) = (1 − α) z_ref + α z_S,     log π_T = log_softmax(z_T / τ)

α = 0 is the reference, α = 1 the student. The loop gets z_ref from the same PEFT model with
`with model.disable_adapter():` (what `trust_region_teacher_logits` does). The lerp must happen
before the full-vocabulary normalisation; it commutes with the division by the temperature and with
adding a per-position constant, so lerping full-vocabulary log-probs instead of logits gives the
same π_T after `log_softmax`. And since the output head is linear (no bias, no adapter on it by
default), lerping the final hidden states gives the same logits, W lerp(h_ref, h_S, α) =
lerp(W h_ref, W h_S, α): a chunked scorer can lerp the (B, L, H) hidden states of its two backbone
passes and never hold (B, L, V) logits twice (`trust_region_logits` works on any tensor).

References: Hübotter et al., "Reinforcement Learning via Self-Distillation", arXiv 2601.20802, §2.3;
the reference implementation lasgroup/SDPO (`_update_teacher`, `TrustRegionTeacher`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch


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


def ema_update_(
    teacher: Mapping[str, torch.Tensor], student: Mapping[str, torch.Tensor], rate: float
) -> None:
    """In place: θ_T ← lerp(θ_T, θ_S, rate) on live tensors (e.g. a second "teacher" adapter).

    For `ttsd.engine.policy.Policy`, whose `adapter_parameters(name)` use the same canonical keys
    for every adapter: `ema_update_(policy.adapter_parameters("teacher"), policy.adapter_parameters(), ρ)`.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"EMA rate must be in [0, 1], got {rate}")
    if set(teacher) != set(student):
        raise ValueError("teacher and student hold different tensors")
    with torch.no_grad():
        for name, theta_t in teacher.items():
            theta_t.lerp_(student[name].detach().to(device=theta_t.device, dtype=theta_t.dtype), rate)


def adapter_parameters(model: torch.nn.Module, adapter_name: str = "default") -> dict[str, torch.nn.Parameter]:
    """The LoRA parameters of one adapter of a PEFT model, by name.

    PEFT names them `...<module>.lora_A.<adapter>.weight` (also lora_B, lora_embedding_A/B,
    lora_magnitude_vector); we select every parameter whose path has a `lora_*` component directly
    followed by the adapter's name.
    """
    selected = {}
    for name, param in model.named_parameters():
        parts = name.split(".")
        if any(part.startswith("lora_") and nxt == adapter_name for part, nxt in zip(parts, parts[1:])):
            selected[name] = param
    if not selected:
        raise ValueError(f"the model has no LoRA parameters for adapter {adapter_name!r}")
    return selected


class EmaTeacher:
    """A float32 EMA copy of a PEFT model's LoRA adapter, swappable into the model for scoring."""

    def __init__(self, model: torch.nn.Module, rate: float = 0.01, adapter_name: str = "default"):
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"EMA rate must be in [0, 1], got {rate}")
        self.rate = rate
        self.adapter_name = adapter_name
        self._student = adapter_parameters(model, adapter_name)
        self._teacher = {name: p.detach().to(torch.float32).clone() for name, p in self._student.items()}

    def update(self) -> None:
        """θ_T ← lerp(θ_T, θ_S, rate): call after each optimizer step."""
        if self.rate > 0.0:
            self._teacher = ema_update(self._teacher, self._student, self.rate)

    def weights(self) -> dict[str, torch.Tensor]:
        """The teacher's adapter tensors (float32), by parameter name."""
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
        restored bit for bit before anyone calls backward. The Parameter objects stay the same,
        so the optimizer's state is untouched.
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
        """Everything needed to resume: rate, adapter name, teacher tensors (CPU)."""
        return {
            "rate": self.rate,
            "adapter_name": self.adapter_name,
            "weights": {name: t.detach().cpu().clone() for name, t in self._teacher.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        weights = state["weights"]
        if set(weights) != set(self._teacher):
            raise ValueError("saved teacher weights do not match this model's adapter parameters")
        self.rate = float(state["rate"])
        self._teacher = {
            name: weights[name].to(device=self._teacher[name].device, dtype=torch.float32).clone() for name in weights
        }


def trust_region_logits(reference: torch.Tensor, student: torch.Tensor, alpha: float) -> torch.Tensor:
    """z_T = lerp(z_ref, z_S, α) = (1 − α) z_ref + α z_S (logits or full-vocabulary log-probs)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"trust-region alpha must be in [0, 1], got {alpha}")
    if reference.shape != student.shape:
        raise ValueError(f"reference {tuple(reference.shape)} and student {tuple(student.shape)} shapes differ")
    return torch.lerp(reference, student.to(reference.dtype), alpha)


def trust_region_logprobs(
    reference_logits: torch.Tensor, student_logits: torch.Tensor, alpha: float, temperature: float = 1.0
) -> torch.Tensor:
    """log π_T = log_softmax(lerp(z_ref, z_S, α) / τ) over the full vocabulary (last dimension)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    return torch.log_softmax(trust_region_logits(reference_logits, student_logits, alpha).float() / temperature, dim=-1)


def _logits_of(output: Any) -> torch.Tensor:
    return output.logits if hasattr(output, "logits") else output


def trust_region_teacher_logits(model: torch.nn.Module, alpha: float, *args: Any, **kwargs: Any) -> torch.Tensor:
    """Run a PEFT model on the teacher context twice, adapter off (reference) and on (student), no grad.

    `model(*args, **kwargs)` is the forward pass (e.g. input_ids=..., attention_mask=...); returns
    lerp(z_ref, z_S, α) (raw logits: divide by the temperature and normalise afterwards).
    """
    with torch.no_grad():
        with model.disable_adapter():
            reference = _logits_of(model(*args, **kwargs))
        student = _logits_of(model(*args, **kwargs))
    return trust_region_logits(reference, student, alpha)

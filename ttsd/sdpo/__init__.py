"""SDPO: the self-distillation loss, the self-teacher, and the self-teacher's prompts.

- `ttsd.sdpo.loss`: `sdpo_loss` (logit level, student's top-K + tail bucket; reverse KL, forward KL
  or JSD_α), `token_level_loss` (sampled-token estimator), `importance_weights`, `LossStats`.
- `ttsd.sdpo.teacher`: `ema_update` (`ema_update_` in place), `EmaTeacher` (EMA copy of the LoRA adapter, swapped in for
  the teacher pass), `trust_region_logits` / `trust_region_logprobs` / `trust_region_teacher_logits`.
- `ttsd.sdpo.prompts`: `teacher_messages`, `teacher_contexts`, `peer_solution` (the wording and the
  student's prompt are `ttsd.prompts`, shared with the baselines).

One step of the loop, top to bottom:

    contexts = teacher_contexts(problem, responses, judgements, templates)     # None: no loss
    with ema_teacher.swapped_in():                                             # no grad
        teacher = score(teacher contexts, student's top-K ids)                 # (B, T, K)
    student = score(student prompt, with grad)                                 # (B, T, K) + ids
    loss, stats = sdpo_loss(student.topk_logprobs, teacher.topk_logprobs, mask,
                            divergence="reverse_kl", weights=None)
    loss.backward(); clip; optimizer.step(); ema_teacher.update()

Names are imported lazily so that importing the prompts does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "loss": ["LossStats", "sdpo_loss", "token_level_loss", "importance_weights", "with_tail", "DIVERGENCES"],
    "teacher": [
        "EmaTeacher",
        "ema_update",
        "ema_update_",
        "trust_region_logits",
        "trust_region_logprobs",
        "trust_region_teacher_logits",
    ],
    "prompts": ["teacher_messages", "teacher_contexts", "peer_solution"],
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name in _MODULE_OF:
        return getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

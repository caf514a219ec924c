"""SDPO: the self-distillation loss, the self-teacher, the learning step, and the teacher's prompts.

- `ttsd.sdpo.loss`: `sdpo_loss` (logit level, student's top-K + tail bucket; reverse KL, forward KL
  or JSD_α), `token_level_loss` (sampled-token estimator), `importance_weights`, `LossStats`.
- `ttsd.sdpo.teacher`: `make_teacher` → `EmaTeacher` (EMA copy of the LoRA adapter, swapped in for
  the teacher pass), `FrozenTeacher`, `TrustRegionTeacher`; `ema_update`.
- `ttsd.sdpo.learn`: `learn_from_batch(policy, teacher, optimizer, batch, settings) -> LearnResult`,
  the step `Sdpo.run_step` runs and benchmarks measure (backward per micro-batch, exact).
- `ttsd.sdpo.memory`: the expected peak memory of that step.
- `ttsd.sdpo.diagnostics`: what the loop records about learning (teacher − student gaps, the
  discovery's likelihood).
- `ttsd.sdpo.prompts`: `teacher_messages`, `teacher_contexts`, `peer_solution` (the wording and the
  student's prompt are `ttsd.prompts`, shared with the baselines).

One step of the loop, top to bottom (`ttsd.sdpo.learn` has it with micro-batches):

    contexts = teacher_contexts(problem, responses, judgements, templates)     # None: no loss
    student = score(student prompt, with grad)                                 # (B, T, K) + ids
    teacher = teacher.scores(policy, contexts, responses, given_ids=student.topk_ids)   # no grad
    loss, stats = sdpo_loss(student.topk_logprobs, teacher.given_logprobs, mask,
                            divergence="reverse_kl", weights=None)
    loss.backward(); clip; optimizer.step(); teacher.update()

Names are imported lazily so that importing the prompts does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "loss": ["LossStats", "sdpo_loss", "token_level_loss", "importance_weights", "with_tail", "DIVERGENCES"],
    "teacher": ["EmaTeacher", "FrozenTeacher", "TrustRegionTeacher", "make_teacher", "ema_update"],
    "learn": ["LearnSettings", "LearningBatch", "LearnResult", "learn_from_batch"],
    "prompts": ["teacher_messages", "teacher_contexts", "peer_solution"],
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name in _MODULE_OF:
        return getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

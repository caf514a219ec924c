"""The sampling distribution of the HF decode paths: nucleus filter and recorded log-probs."""

from __future__ import annotations

import torch

from ttsd.engine.logprob_recorder import LogprobRecorder, top_p_mask


def testtop_p_mask_keeps_the_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = torch.isfinite(top_p_mask(logits, 0.8))[0].tolist()
    assert kept == [True, True, False, False]
    assert torch.isfinite(top_p_mask(logits, 0.01))[0].tolist() == [True, False, False, False]

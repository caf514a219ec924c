"""The sampling distribution of the HF decode paths: nucleus filter and recorded log-probs."""

from __future__ import annotations

import torch

from ttsd.engine.logprob_recorder import LogprobRecorder, top_p_mask


def testtop_p_mask_keeps_the_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = torch.isfinite(top_p_mask(logits, 0.8))[0].tolist()
    assert kept == [True, True, False, False]
    assert torch.isfinite(top_p_mask(logits, 0.01))[0].tolist() == [True, False, False, False]


def test_recorder_scales_filters_and_records_the_log_prob_before_truncation():
    recorder = LogprobRecorder(temperature=0.5, top_p=0.6)
    step1 = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    step2 = torch.tensor([[0.0, 1.0, 2.0], [1.0, 0.0, 0.0]])
    out = recorder(torch.tensor([[5], [6]]), step1)
    expected = step1 / 0.5
    assert torch.equal(torch.isfinite(out), torch.tensor([[True, False, False], [False, False, True]]))
    torch.testing.assert_close(out[torch.isfinite(out)], expected[torch.isfinite(out)])
    recorder(torch.tensor([[5, 1], [6, 2]]), step2)  # tokens 1 and 2 were drawn at step 1
    logprobs = recorder.finish(torch.tensor([0, 0]))  # and tokens 0, 0 at step 2
    want = torch.stack([
        torch.log_softmax(step1 / 0.5, dim=-1)[[0, 1], [1, 2]],  # token 1 is outside row 0's nucleus: still recorded
        torch.log_softmax(step2 / 0.5, dim=-1)[[0, 1], [0, 0]],
    ], dim=1)
    torch.testing.assert_close(logprobs, want)
    assert LogprobRecorder(temperature=0.0, top_p=1.0).temperature == 1.0  # greedy: log-probs at T = 1

"""The quote ablation's sign test (benchmarks/feedback_quote_ablation.py), against hand-computed values."""

import pytest

from benchmarks.feedback_quote_ablation import sign_test_p


def test_sign_test_matches_hand_computed_binomial_tails():
    assert sign_test_p(0, 10) == pytest.approx(2 / 1024)  # 2 · P(X = 0), X ~ Bin(10, 1/2)
    assert sign_test_p(10, 10) == pytest.approx(2 / 1024)  # symmetric
    assert sign_test_p(2, 10) == pytest.approx(2 * (1 + 10 + 45) / 1024)
    assert sign_test_p(5, 10) == 1.0  # the two tails overlap: capped at 1
    assert sign_test_p(0, 0) == 1.0  # no informative attempt: no evidence

"""The SDPO loss against numbers worked out by hand and against closed-form gradients."""

import math

import pytest
import torch

from ttsd.sdpo.loss import (
    divergence_per_token,
    generalized_jsd,
    importance_weights,
    kl_divergence,
    sdpo_loss,
    token_level_loss,
    with_tail,
)


def _log(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64).log()


def _one_position(values) -> torch.Tensor:
    """(1, 1, K) log-probs from a list of probabilities."""
    return _log(values).view(1, 1, -1)


ONE = torch.ones(1, 1, dtype=torch.bool)

# Vocabulary of 3, K = 2 (the student's top-2 are ids 0 and 1), the tail holds id 2.
#   student p = (0.5, 0.3, 0.2), teacher q = (0.25, 0.25, 0.5)
#   KL(p‖q) = 0.5 ln 2 + 0.3 ln 1.2 + 0.2 ln 0.4
#           = 0.346574 + 0.054697 − 0.183258 = 0.218012
#   KL(q‖p) = 0.25 ln 0.5 + 0.25 ln(0.25/0.3) + 0.5 ln 2.5
#           = −0.173287 − 0.045580 + 0.458145 = 0.239278
#   JSD_½:   M = (0.375, 0.275, 0.35)
#            KL(q‖M) = 0.25 ln(2/3) + 0.25 ln(10/11) + 0.5 ln(10/7) = 0.053144
#            KL(p‖M) = 0.5 ln(4/3) + 0.3 ln(12/11) + 0.2 ln(4/7)    = 0.058021
#            JSD_½ = ½ (0.053144 + 0.058021) = 0.055582
STUDENT_TOP2 = [0.5, 0.3]
TEACHER_AT_IDS = [0.25, 0.25]


@pytest.mark.parametrize(
    ("divergence", "alpha", "expected"),
    [("reverse_kl", 0.5, 0.218012), ("forward_kl", 0.5, 0.239278), ("jsd", 0.5, 0.055582)],
)
def test_small_case_by_hand(divergence, alpha, expected):
    loss, stats = sdpo_loss(
        _one_position(STUDENT_TOP2), _one_position(TEACHER_AT_IDS), ONE, divergence=divergence, alpha=alpha
    )
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert stats.mean_divergence == pytest.approx(expected, abs=1e-6)
    assert stats.mean_reverse_kl == pytest.approx(0.218012, abs=1e-6)  # always reverse KL, for the log
    assert stats.num_tokens == 1
    assert stats.student_topk_mass == pytest.approx(0.8)
    assert stats.teacher_topk_mass == pytest.approx(0.5)


def test_tail_bucket_groups_the_rest_of_the_vocabulary():
    # Vocabulary of 4, K = 2: p = (0.4, 0.3 | 0.2, 0.1), q = (0.1, 0.2 | 0.3, 0.4)
    # tails 0.3 and 0.7:  KL = 0.4 ln 4 + 0.3 ln 1.5 + 0.3 ln(3/7)
    #                        = 0.554518 + 0.121640 − 0.254189 = 0.421968
    student, teacher = _one_position([0.4, 0.3]), _one_position([0.1, 0.2])
    assert with_tail(student).exp().flatten().tolist() == pytest.approx([0.4, 0.3, 0.3])
    assert with_tail(teacher).exp().flatten().tolist() == pytest.approx([0.1, 0.2, 0.7])
    loss, _ = sdpo_loss(student, teacher, ONE)
    assert loss.item() == pytest.approx(0.421968, abs=1e-6)
    # without the tail the two ids are renormalised: (4/7, 3/7) against (1/3, 2/3)
    no_tail, _ = sdpo_loss(student, teacher, ONE, tail=False)
    expected = 4 / 7 * math.log((4 / 7) / (1 / 3)) + 3 / 7 * math.log((3 / 7) / (2 / 3))
    assert no_tail.item() == pytest.approx(expected, abs=1e-9)


def test_tail_is_finite_at_the_extremes():
    full = torch.log_softmax(torch.randn(2, 3, 7, dtype=torch.float32), dim=-1)
    tail = with_tail(full)[..., -1]  # all the mass in the top-K: tail ≈ 0 but finite
    assert torch.isfinite(tail).all()
    assert (tail.exp() < 1e-6).all()
    tiny = torch.full((1, 1, 3), -50.0)  # almost no mass in the top-K: tail ≈ log 1
    assert with_tail(tiny)[..., -1].item() == pytest.approx(0.0, abs=1e-6)


def test_divergences_are_nonnegative_and_zero_only_when_equal():
    gen = torch.Generator().manual_seed(0)
    p = torch.log_softmax(torch.randn(200, 9, generator=gen, dtype=torch.float64), -1)
    q = torch.log_softmax(torch.randn(200, 9, generator=gen, dtype=torch.float64), -1)
    for divergence in ("reverse_kl", "forward_kl", "jsd"):
        d = divergence_per_token(p, q, divergence, alpha=0.3)
        assert (d > 1e-6).all(), divergence
        assert divergence_per_token(p, p, divergence, alpha=0.3).abs().max() < 1e-12, divergence


def test_jsd_limits_and_symmetry():
    gen = torch.Generator().manual_seed(1)
    s = torch.log_softmax(torch.randn(50, 6, generator=gen, dtype=torch.float64), -1)
    t = torch.log_softmax(torch.randn(50, 6, generator=gen, dtype=torch.float64), -1)
    forward, reverse = kl_divergence(t, s), kl_divergence(s, t)
    eps = 1e-5
    # JSD_α / α → KL(T‖S) as α → 0;  JSD_α / (1−α) → KL(S‖T) as α → 1
    assert torch.allclose(generalized_jsd(s, t, eps) / eps, forward, rtol=1e-3, atol=1e-6)
    assert torch.allclose(generalized_jsd(s, t, 1 - eps) / eps, reverse, rtol=1e-3, atol=1e-6)
    # α = ½ is the symmetric Jensen-Shannon divergence, bounded by log 2
    half = generalized_jsd(s, t, 0.5)
    assert torch.allclose(half, generalized_jsd(t, s, 0.5), atol=1e-12)
    assert (half <= math.log(2)).all()
    # α ≠ ½ is not symmetric: the mixture weights swap roles
    assert not torch.allclose(generalized_jsd(s, t, 0.2), generalized_jsd(t, s, 0.2))
    with pytest.raises(ValueError, match="0 < alpha < 1"):
        generalized_jsd(s, t, 1.0)


def _exact_reverse_kl_grad(z: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """∂/∂z_i KL(p‖q) = p_i (log p_i − log q_i − KL), p = softmax(z), q = softmax(teacher)."""
    logp, logq = torch.log_softmax(z, -1), torch.log_softmax(teacher_logits, -1)
    kl = (logp.exp() * (logp - logq)).sum(-1, keepdim=True)
    return logp.exp() * (logp - logq - kl)


def test_full_vocabulary_gradient_is_the_exact_kl_gradient():
    gen = torch.Generator().manual_seed(2)
    B, T, V = 2, 3, 11
    z = torch.randn(B, T, V, generator=gen, dtype=torch.float64, requires_grad=True)
    teacher_logits = torch.randn(B, T, V, generator=gen, dtype=torch.float64)
    mask = torch.ones(B, T, dtype=torch.bool)

    ids = torch.log_softmax(z, -1).topk(V, dim=-1).indices  # K = V: the whole vocabulary
    student = torch.log_softmax(z, -1).gather(-1, ids)
    teacher = torch.log_softmax(teacher_logits, -1).gather(-1, ids)
    loss, stats = sdpo_loss(student, teacher, mask)
    loss.backward()

    exact = _exact_reverse_kl_grad(z.detach(), teacher_logits) / (B * T)  # token mean
    assert torch.allclose(z.grad, exact, atol=1e-6)
    exact_kl = kl_divergence(torch.log_softmax(z.detach(), -1), torch.log_softmax(teacher_logits, -1)).mean()
    assert stats.mean_reverse_kl == pytest.approx(exact_kl.item(), abs=1e-6)


def test_sampled_token_gradient_matches_logit_level_in_expectation():
    """Proposition 2.1: E_y~π_S[∇ token-level loss] = ∇ KL(π_S ‖ π_T)."""
    gen = torch.Generator().manual_seed(3)
    V, N = 6, 200_000
    z = torch.randn(V, generator=gen, dtype=torch.float64) * 1.5
    teacher_logits = torch.randn(V, generator=gen, dtype=torch.float64) * 1.5
    samples = torch.multinomial(torch.softmax(z, -1), N, replacement=True, generator=gen)

    z_mc = z.clone().requires_grad_(True)
    student = torch.log_softmax(z_mc, -1)[samples].view(N, 1)  # N attempts of one token each
    teacher = torch.log_softmax(teacher_logits, -1)[samples].view(N, 1)
    loss, stats = token_level_loss(student, teacher, torch.ones(N, 1, dtype=torch.bool))
    loss.backward()

    z_exact = z.clone().view(1, 1, V).requires_grad_(True)
    logit_loss, _ = sdpo_loss(
        torch.log_softmax(z_exact, -1), torch.log_softmax(teacher_logits, -1).view(1, 1, V), ONE
    )
    logit_loss.backward()
    exact = z_exact.grad.flatten()

    assert torch.allclose(exact, _exact_reverse_kl_grad(z, teacher_logits), atol=1e-6)
    # Monte-Carlo error: per-sample gradients are O(1), so ~1/sqrt(N) ≈ 0.002; 0.02 is > 5σ
    assert torch.allclose(z_mc.grad, exact, atol=0.02), (z_mc.grad, exact)
    assert exact.abs().max() > 0.1  # the test compares a real signal, not two zeros
    # the sampled-token KL estimate is unbiased too
    kl = kl_divergence(torch.log_softmax(z, -1), torch.log_softmax(teacher_logits, -1)).item()
    assert stats.mean_reverse_kl == pytest.approx(kl, abs=0.02)


def test_sampled_token_loss_sign_and_value():
    # log π_S(y) = log 0.5, log π_T(y) = log 0.25: advantage = −ln 2 (teacher dislikes y)
    # loss = −A · log π_S = −(−0.693147)(−0.693147) = −0.480453; d loss / d log π_S = −A = +0.693147,
    # so gradient descent lowers log π_S(y): the student moves toward the teacher.
    student = torch.tensor([[math.log(0.5)]], dtype=torch.float64, requires_grad=True)
    teacher = torch.tensor([[math.log(0.25)]], dtype=torch.float64)
    loss, stats = token_level_loss(student, teacher, torch.ones(1, 1))
    loss.backward()
    assert loss.item() == pytest.approx(-(math.log(2) ** 2), abs=1e-9)
    assert student.grad.item() == pytest.approx(math.log(2), abs=1e-9)
    assert stats.mean_reverse_kl == pytest.approx(math.log(2), abs=1e-9)


def test_mask_is_respected():
    gen = torch.Generator().manual_seed(4)
    student = torch.log_softmax(torch.randn(2, 4, 5, generator=gen), -1).requires_grad_(True)
    teacher = torch.log_softmax(torch.randn(2, 4, 5, generator=gen), -1)
    mask = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)

    # padding full of garbage (NaN, -inf) changes nothing and leaks no NaN into the gradient
    dirty_student = student.detach().clone()
    dirty_student[~mask] = float("nan")
    dirty_teacher = teacher.clone()
    dirty_teacher[~mask] = float("-inf")
    dirty_student.requires_grad_(True)
    loss, stats = sdpo_loss(student, teacher, mask)
    dirty_loss, _ = sdpo_loss(dirty_student, dirty_teacher, mask)
    dirty_loss.backward()
    loss.backward()
    assert dirty_loss.item() == pytest.approx(loss.item(), abs=1e-6)
    assert torch.isfinite(dirty_student.grad).all()
    assert (student.grad[~mask] == 0).all() and (student.grad[mask] != 0).any()

    # token mean over the 3 counted tokens of the whole batch (not a mean of per-attempt means)
    per_token = kl_divergence(with_tail(student.detach()), with_tail(teacher))
    assert stats.num_tokens == 3
    assert loss.item() == pytest.approx(per_token[mask].sum().item() / 3, abs=1e-6)

    empty, empty_stats = sdpo_loss(student, teacher, torch.zeros(2, 4, dtype=torch.bool))
    assert empty.item() == 0.0 and empty_stats.num_tokens == 0

    tok_loss, tok_stats = token_level_loss(
        student[..., 0], teacher[..., 0].masked_fill(~mask, float("nan")), mask
    )
    assert math.isfinite(tok_loss.item()) and tok_stats.num_tokens == 3


def test_importance_weights_are_detached_clipped_ratios():
    now = torch.tensor([[0.0, math.log(1.5), math.log(5.0), -100.0]], requires_grad=True)
    then = torch.zeros(1, 4)
    w = importance_weights(now, then)  # default clip 2
    assert not w.requires_grad
    assert w.flatten().tolist() == pytest.approx([1.0, 1.5, 2.0, math.exp(-20.0)], rel=1e-6)
    assert importance_weights(now, then, clip=4.0)[0, 2].item() == pytest.approx(4.0)
    with pytest.raises(ValueError):
        importance_weights(now, then, clip=0.0)


def test_weights_scale_each_token_and_do_not_carry_gradient():
    gen = torch.Generator().manual_seed(5)
    student = torch.log_softmax(torch.randn(1, 2, 4, generator=gen, dtype=torch.float64), -1)
    teacher = torch.log_softmax(torch.randn(1, 2, 4, generator=gen, dtype=torch.float64), -1)
    mask = torch.ones(1, 2, dtype=torch.bool)
    per_token = kl_divergence(with_tail(student), with_tail(teacher))
    weights = torch.tensor([[2.0, 0.5]], dtype=torch.float64, requires_grad=True)
    loss, stats = sdpo_loss(student, teacher, mask, weights=weights)
    assert loss.item() == pytest.approx((2.0 * per_token[0, 0] + 0.5 * per_token[0, 1]).item() / 2)
    assert stats.mean_weight == pytest.approx(1.25)
    assert stats.mean_divergence == pytest.approx(per_token.mean().item())  # unweighted
    assert not loss.requires_grad  # nothing upstream needs a gradient: weights are detached

    s = torch.tensor([[math.log(0.5), math.log(0.5)]], dtype=torch.float64)
    t = torch.tensor([[math.log(0.25), math.log(0.25)]], dtype=torch.float64)
    tok, _ = token_level_loss(s, t, mask, weights=torch.tensor([[2.0, 0.0]], dtype=torch.float64))
    assert tok.item() == pytest.approx(-(math.log(2) ** 2) * 2.0 / 2)


def test_bad_inputs_give_clear_errors():
    x = torch.zeros(1, 2, 3)
    with pytest.raises(ValueError, match="shapes differ"):
        sdpo_loss(x, torch.zeros(1, 2, 4), torch.ones(1, 2))
    with pytest.raises(ValueError, match="mask"):
        sdpo_loss(x, x, torch.ones(2, 2))
    with pytest.raises(ValueError, match="unknown divergence"):
        sdpo_loss(x, x, torch.ones(1, 2), divergence="kl")
    with pytest.raises(ValueError, match="weights"):
        sdpo_loss(x, x, torch.ones(1, 2), weights=torch.ones(2))

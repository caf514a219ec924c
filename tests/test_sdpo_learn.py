"""The learning step on the tiny random model: backward per micro-batch gives the whole batch's loss
and gradient; importance weights come from the trainer's own first-step log-probs, never the
sampler's; the stale-weights gap is computed on the trainer's device."""

from __future__ import annotations

import pytest
import torch

from ttsd.config import SolveConfig
from ttsd.engine.policy import LoraSettings, Policy
from ttsd.engine.scorer import micro_batches, score_tokens
from ttsd.sdpo.learn import LearningBatch, LearnSettings, learn_from_batch, stale_weights_gap_sum
from ttsd.sdpo.loss import sdpo_loss, token_level_loss
from ttsd.sdpo.teacher import make_teacher


def _policy(tiny_model_dir, checkpointing: bool = True) -> Policy:
    torch.manual_seed(0)
    policy = Policy(tiny_model_dir, lora=LoraSettings(rank=4, alpha=8), device="cpu", dtype="float32",
                    gradient_checkpointing=checkpointing)
    with torch.no_grad():  # a trained-looking student (peft starts at B = 0)
        for p in policy.trainable_parameters():
            p.add_(0.05 * torch.randn_like(p))
    return policy


def _batch(vocab: int, rows: int = 5) -> LearningBatch:
    generator = torch.Generator().manual_seed(3)
    prompt = torch.randint(3, vocab, (20,), generator=generator).tolist()  # shared: the prefix path runs
    responses = [torch.randint(3, vocab, (n,), generator=generator).tolist() for n in (9, 4, 12, 7, 10)[:rows]]
    contexts = [prompt + torch.randint(3, vocab, (n,), generator=generator).tolist() for n in (6, 2, 9, 4, 5)[:rows]]
    return LearningBatch(student_prompts=[prompt] * rows, teacher_contexts=contexts, responses=responses)


def _settings(**overrides) -> LearnSettings:
    config = SolveConfig(top_k=5, temperature=0.9, grad_clip=1e9)
    return LearnSettings.from_config(config, **overrides)


def _whole_batch_gradient(policy, teacher, batch, settings):
    """Today's reference: every row scored at once, one loss, one backward."""
    logit_level = settings.loss == "logit"
    student = score_tokens(policy, batch.student_prompts, batch.responses, temperature=settings.temperature,
                           top_k=settings.top_k if logit_level else 0, grad=True)
    scored = teacher.scores(policy, batch.teacher_contexts, batch.responses, temperature=settings.temperature,
                            given_ids=student.topk_ids if logit_level else None)
    if logit_level:
        loss, _ = sdpo_loss(student.topk_logprobs, scored.given_logprobs, student.mask)
    else:
        loss, _ = token_level_loss(student.response_logprobs, scored.response_logprobs, student.mask)
    policy.model.zero_grad(set_to_none=True)
    loss.backward()
    gradients = [p.grad.clone() for p in policy.trainable_parameters()]
    policy.model.zero_grad(set_to_none=True)
    return float(loss.detach()), gradients


@pytest.mark.parametrize("checkpointing", [True, False])
@pytest.mark.parametrize("loss", ["logit", "token"])
def test_backward_per_micro_batch_equals_one_backward_over_the_batch(tiny_model_dir, checkpointing, loss):
    policy = _policy(tiny_model_dir, checkpointing)
    teacher = make_teacher("ema", policy, ema_rate=0.5)
    with torch.no_grad():  # the student moves away from the EMA copy: teacher ≠ student
        for p in policy.trainable_parameters():
            p.add_(0.05 * torch.randn_like(p))
    batch = _batch(policy.model.config.vocab_size)
    settings = _settings(loss=loss, max_batch_tokens=60)
    lengths = [len(p) + len(r) for p, r in zip(batch.student_prompts, batch.responses)]
    assert len(micro_batches(lengths, settings.max_batch_tokens)) >= 3

    expected_loss, expected = _whole_batch_gradient(policy, teacher, batch, settings)
    before = policy.adapter_state()
    optimizer = torch.optim.SGD(policy.trainable_parameters(), lr=0.0)  # keep the weights: read the gradient
    result = learn_from_batch(policy, teacher, optimizer, batch, settings)
    assert result.num_tokens == sum(len(r) for r in batch.responses)
    assert result.loss == pytest.approx(expected_loss, rel=1e-5, abs=1e-6)
    assert any(g.abs().max() > 0 for g in expected)
    for got, want in zip([p.grad for p in policy.trainable_parameters()], expected):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    assert all(torch.equal(before[k], v.detach()) for k, v in policy.adapter_parameters().items())
    # the first step's log-probs of the sampled tokens, per attempt, for diagnostics
    assert [len(r) for r in result.student_logprobs] == [len(r) for r in batch.responses]
    assert [len(r) for r in result.teacher_logprobs] == [len(r) for r in batch.responses]
    with torch.no_grad():
        trainer = score_tokens(policy, batch.student_prompts, batch.responses, temperature=settings.temperature, top_k=0)
    assert result.student_logprobs[2] == pytest.approx(trainer.response_logprobs[2, :12].tolist(), abs=1e-5)


def test_importance_weights_use_the_trainers_first_step_not_the_sampler(tiny_model_dir):
    """Several optimizer steps on one batch: the update must not depend on what the sampler said
    (bf16, another kernel, top_p < 1 all shift it); only the stale-weights gap does."""
    policy = _policy(tiny_model_dir)
    start = policy.adapter_state()
    batch = _batch(policy.model.config.vocab_size, rows=3)
    settings = _settings(optimizer_steps=3, importance_clip=1.5)
    with torch.no_grad():
        exact = score_tokens(policy, batch.student_prompts, batch.responses, temperature=settings.temperature, top_k=0)
    trainer_rows = [exact.response_logprobs[i, : len(r)].tolist() for i, r in enumerate(batch.responses)]

    outcomes = {}
    for name, shift in (("agrees", 0.0), ("disagrees", -0.3), ("none", None)):
        policy.load_adapter_state(start)
        torch.manual_seed(0)
        teacher = make_teacher("ema", policy, ema_rate=0.5)
        optimizer = torch.optim.AdamW(policy.trainable_parameters(), lr=3e-2)
        sampler_rows = None if shift is None else [[v + shift for v in row] for row in trainer_rows]
        result = learn_from_batch(policy, teacher, optimizer, batch.model_copy(update={"sampler_logprobs": sampler_rows}), settings)
        outcomes[name] = (result, policy.adapter_state())
    (agrees, weights), (disagrees, other), (unreported, third) = outcomes["agrees"], outcomes["disagrees"], outcomes["none"]
    assert agrees.stale_weights_gap == pytest.approx(0.0, abs=1e-5)
    assert disagrees.stale_weights_gap == pytest.approx(0.3, abs=1e-4) and unreported.stale_weights_gap is None
    assert agrees.mean_weight != pytest.approx(1.0, abs=1e-4)  # the weights moved: ratios are in play
    for key in weights:
        assert torch.equal(weights[key], other[key]) and torch.equal(weights[key], third[key])
    assert max((weights[k] - start[k]).abs().max() for k in start) > 1e-3


def test_logprob_gap_is_computed_on_the_trainers_device():
    """The sampler's floats go to the trainer's device (a CUDA tensor minus a CPU one fails; the
    meta device fails the same way here)."""
    sampler = [[-1.0, -2.0, -0.5], [-3.0]]
    trainer = torch.tensor([[-1.5, -2.0, -0.25], [-2.0, 7.0, 7.0]])
    mask = torch.tensor([[True, True, True], [True, False, False]])
    assert float(stale_weights_gap_sum(trainer, mask, sampler)) == pytest.approx(0.5 + 0.0 + 0.25 + 1.0)
    on_meta = stale_weights_gap_sum(trainer.to("meta"), mask.to("meta"), sampler)
    assert on_meta.device.type == "meta" and on_meta.shape == ()


def test_a_learning_batch_is_checked():
    with pytest.raises(ValueError, match="one student prompt"):
        LearningBatch(student_prompts=[[1]], teacher_contexts=[], responses=[[2]])
    with pytest.raises(ValueError, match="has tokens"):
        LearningBatch(student_prompts=[[1]], teacher_contexts=[[1]], responses=[[]])
    with pytest.raises(ValueError, match="one sampler log-prob"):
        LearningBatch(student_prompts=[[1]], teacher_contexts=[[1]], responses=[[2, 3]], sampler_logprobs=[[-1.0]])

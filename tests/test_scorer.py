"""The scorer against a naive full-logits computation, on the tiny random model."""

from __future__ import annotations

import pytest
import torch

from ttsd.engine.policy import LoraSettings, Policy
from ttsd.engine.scorer import MIN_SHARED_PREFIX, micro_batches, pack_micro_batch, pad_back, score_tokens, shared_prefix_length


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    torch.manual_seed(0)
    policy = Policy(tiny_model_dir, lora=LoraSettings(rank=4, alpha=8), device="cpu", dtype="float32")
    # Non-zero LoRA B so the adapter actually changes the function (peft initializes B = 0).
    with torch.no_grad():
        for parameter in policy.trainable_parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return policy


def _batch(vocab: int):
    generator = torch.Generator().manual_seed(1)
    shapes = [(5, 7), (3, 1), (9, 4), (2, 0), (6, 11)]  # (prompt, response) lengths; one empty response
    prompts = [torch.randint(3, vocab, (p,), generator=generator).tolist() for p, _ in shapes]
    responses = [torch.randint(3, vocab, (r,), generator=generator).tolist() for _, r in shapes]
    return prompts, responses


def _naive(model, prompts, responses, temperature):
    """One sequence at a time, full logits: log_softmax(z / T) at every response position."""
    rows = []
    for prompt, response in zip(prompts, responses):
        ids = torch.tensor([prompt + response])
        logits = model(input_ids=ids).logits[0].float() / temperature
        rows.append(torch.log_softmax(logits, dim=-1)[len(prompt) - 1 : len(prompt) + len(response) - 1])
    return rows


@pytest.mark.parametrize("chunk_tokens,max_batch_tokens", [(1024, 16384), (3, 16384), (2, 12)])
def test_scores_equal_naive_full_logits(policy, chunk_tokens, max_batch_tokens):
    prompts, responses = _batch(policy.model.config.vocab_size)
    temperature = 0.7
    given = [torch.randint(0, policy.model.config.vocab_size, (len(r), 3)) for r in responses]
    with torch.no_grad():
        naive = _naive(policy.model, prompts, responses, temperature)
    scores = score_tokens(
        policy, prompts, responses, temperature=temperature, top_k=5, given_ids=given,
        chunk_tokens=chunk_tokens, max_batch_tokens=max_batch_tokens,
    )
    width = max(len(r) for r in responses)
    assert scores.response_logprobs.shape == (len(responses), width)
    assert scores.topk_logprobs.shape == scores.topk_ids.shape == (len(responses), width, 5)
    assert scores.given_logprobs.shape == (len(responses), width, 3)
    for i, (full, response) in enumerate(zip(naive, responses)):
        n = len(response)
        assert scores.mask[i].sum().item() == n and scores.mask[i, :n].all()
        expected = full.gather(1, torch.tensor(response)[:, None]).squeeze(1)
        torch.testing.assert_close(scores.response_logprobs[i, :n], expected, atol=1e-5, rtol=0)
        top_values, top_ids = full.topk(5, dim=-1)
        torch.testing.assert_close(scores.topk_logprobs[i, :n], top_values, atol=1e-5, rtol=0)
        assert torch.equal(scores.topk_ids[i, :n], top_ids)
        torch.testing.assert_close(scores.given_logprobs[i, :n], full.gather(1, given[i]), atol=1e-5, rtol=0)
        assert (scores.response_logprobs[i, n:] == 0).all()


def test_base_weights_differ_from_adapter(policy):
    prompts, responses = _batch(policy.model.config.vocab_size)
    with policy.base_weights():
        base = score_tokens(policy, prompts, responses, top_k=0)
    adapted = score_tokens(policy, prompts, responses, top_k=0)
    assert base.topk_ids is None
    assert not torch.allclose(base.response_logprobs[0, :7], adapted.response_logprobs[0, :7])


def test_trust_region_teacher_equals_lerp_of_full_logits(policy):
    prompts, responses = _batch(policy.model.config.vocab_size)
    temperature, alpha = 0.7, 0.3
    given = [torch.randint(0, policy.model.config.vocab_size, (len(r), 4)) for r in responses]
    scores = score_tokens(
        policy, prompts, responses, temperature=temperature, top_k=0, given_ids=given, trust_region_alpha=alpha,
        max_batch_tokens=20,
    )
    with torch.no_grad():
        for i, (prompt, response) in enumerate(zip(prompts, responses)):
            if not response:
                continue
            ids = torch.tensor([prompt + response])
            with policy.model.disable_adapter():
                reference = policy.model(input_ids=ids).logits[0]
            student = policy.model(input_ids=ids).logits[0]
            lerped = torch.lerp(reference, student, alpha) / temperature  # z_T = lerp(z_ref, z_S, α)
            full = torch.log_softmax(lerped, dim=-1)[len(prompt) - 1 : len(prompt) + len(response) - 1]
            n = len(response)
            torch.testing.assert_close(
                scores.response_logprobs[i, :n], full.gather(1, torch.tensor(response)[:, None]).squeeze(1), atol=1e-5, rtol=0
            )
            torch.testing.assert_close(scores.given_logprobs[i, :n], full.gather(1, given[i]), atol=1e-5, rtol=0)
    # the end points are the reference (adapter off) and the current adapter
    with policy.base_weights():
        base = score_tokens(policy, prompts, responses, top_k=0)
    torch.testing.assert_close(score_tokens(policy, prompts, responses, top_k=0, trust_region_alpha=0.0).response_logprobs,
                               base.response_logprobs, atol=1e-5, rtol=0)
    torch.testing.assert_close(score_tokens(policy, prompts, responses, top_k=0, trust_region_alpha=1.0).response_logprobs,
                               score_tokens(policy, prompts, responses, top_k=0).response_logprobs, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="without gradients"):
        score_tokens(policy, prompts, responses, grad=True, trust_region_alpha=alpha)


def test_trust_region_refuses_an_adapted_output_head(tiny_model_dir):
    """Lerping hidden states equals lerping logits only when the head is the same for both passes."""
    policy = Policy(tiny_model_dir, lora=LoraSettings(rank=2, alpha=4, target_modules=["q_proj", "lm_head"]), device="cpu", dtype="float32")
    with pytest.raises(ValueError, match="without LoRA"):
        score_tokens(policy, [[5, 6, 7]], [[8, 9]], trust_region_alpha=0.5)


def test_student_gradients_equal_naive_and_teacher_has_none(policy):
    prompts, responses = _batch(policy.model.config.vocab_size)
    teacher = score_tokens(policy, prompts, responses, top_k=4, grad=False)
    assert not teacher.response_logprobs.requires_grad and not teacher.topk_logprobs.requires_grad

    student = score_tokens(policy, prompts, responses, top_k=4, grad=True, chunk_tokens=4, max_batch_tokens=20)
    assert student.response_logprobs.requires_grad and student.topk_logprobs.requires_grad
    loss = (student.response_logprobs * student.mask).sum() + (student.topk_logprobs.exp().square() * student.mask[..., None]).sum()
    policy.model.zero_grad()
    loss.backward()
    got = [p.grad.clone() for p in policy.trainable_parameters()]
    assert all(g is not None for g in got) and any(g.abs().sum() > 0 for g in got)
    assert all(p.grad is None for n, p in policy.model.named_parameters() if "lora_" not in n)

    policy.model.zero_grad()
    naive = _naive(policy.model, prompts, responses, 1.0)
    expected_loss = sum(
        full.gather(1, torch.tensor(r)[:, None]).sum() + full.topk(4, dim=-1).values.exp().square().sum()
        for full, r in zip(naive, responses)
    )
    expected_loss.backward()
    torch.testing.assert_close(loss.detach(), expected_loss.detach(), atol=1e-4, rtol=1e-6)
    for g, p in zip(got, policy.trainable_parameters()):
        torch.testing.assert_close(g, p.grad, atol=1e-5, rtol=1e-4)
    policy.model.zero_grad()
    assert not policy.model.training  # the scorer restores eval mode


def _shared_batch(vocab: int):
    """Student-like rows (one prompt) and teacher-like rows (one question, then different feedback)."""
    generator = torch.Generator().manual_seed(7)
    question = torch.randint(3, vocab, (MIN_SHARED_PREFIX + 9,), generator=generator).tolist()
    feedback = [torch.randint(3, vocab, (n,), generator=generator).tolist() for n in (5, 1, 8, 3)]
    responses = [torch.randint(3, vocab, (n,), generator=generator).tolist() for n in (6, 9, 0, 4)]
    return [question] * 4, [question + f for f in feedback], responses


def test_shared_prefix_length():
    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 3]]) == 2  # keeps one token back
    assert shared_prefix_length([[1, 2, 3]] * 3) == 2
    assert shared_prefix_length([[1, 2, 3]]) == 0 and shared_prefix_length([[1, 2], [3, 2]]) == 0


@pytest.mark.parametrize("checkpointing", [True, False])
def test_sharing_the_prefix_changes_no_score_and_no_gradient(tiny_model_dir, checkpointing, monkeypatch):
    """The student's gradients and the teacher's scores with the common prefix run once equal
    those of whole rows, under gradient checkpointing (which replays layers in backward) too."""
    import ttsd.engine.scorer as scorer

    shared_caches = []
    real = scorer._write_once_cache
    monkeypatch.setattr(scorer, "_write_once_cache", lambda *a: shared_caches.append(real(*a)) or shared_caches[-1])
    torch.manual_seed(0)
    policy = Policy(tiny_model_dir, lora=LoraSettings(rank=4, alpha=8), device="cpu", dtype="float32", gradient_checkpointing=checkpointing)
    with torch.no_grad():
        for parameter in policy.trainable_parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    prompts, contexts, responses = _shared_batch(policy.model.config.vocab_size)
    results = {}
    for share in (True, False):
        student = score_tokens(policy, prompts, responses, top_k=5, grad=True, share_prefix=share, chunk_tokens=4)
        teacher = score_tokens(policy, contexts, responses, top_k=0, given_ids=student.topk_ids, share_prefix=share)
        trust = score_tokens(policy, contexts, responses, top_k=0, trust_region_alpha=0.4, share_prefix=share)
        loss = (student.topk_logprobs.exp() * (student.topk_logprobs - teacher.given_logprobs) * student.mask[..., None]).sum()
        policy.model.zero_grad()
        loss.backward()
        results[share] = (student, teacher, trust, [p.grad.clone() for p in policy.trainable_parameters()])
    # 4 passes shared a prefix (student, teacher, trust region twice) through the KV path, not a fallback
    assert len(shared_caches) == 4 and all(c is not None for c in shared_caches)
    (s1, t1, r1, g1), (s0, t0, r0, g0) = results[True], results[False]
    for shared, whole in ((s1.topk_logprobs, s0.topk_logprobs), (s1.response_logprobs, s0.response_logprobs),
                          (t1.given_logprobs, t0.given_logprobs), (r1.response_logprobs, r0.response_logprobs)):
        torch.testing.assert_close(shared.detach(), whole.detach(), atol=1e-5, rtol=0)
    assert torch.equal(s1.topk_ids, s0.topk_ids) and torch.equal(s1.mask, s0.mask)
    assert any(g.abs().sum() > 0 for g in g0)
    for shared, whole in zip(g1, g0):
        torch.testing.assert_close(shared, whole, atol=1e-5, rtol=1e-4)
    policy.model.zero_grad()


def test_micro_batches_respect_padded_budget():
    assert micro_batches([4, 4, 4, 10, 1], 12) == [[0, 1, 2], [3], [4]]
    assert micro_batches([50], 10) == [[0]]  # a sequence longer than the budget still runs alone


def test_bad_input_is_rejected(policy):
    with pytest.raises(ValueError):
        score_tokens(policy, [[1, 2]], [[3], [4]])
    with pytest.raises(ValueError):
        score_tokens(policy, [[]], [[3]])


def test_a_transformers_without_the_read_only_cache_flag_is_refused(tiny_model_dir, monkeypatch):
    """Without `_can_checkpoint_with_cache` a checkpointed layer drops the shared prompt's cache and
    the student would be scored without its prompt: the scorer must refuse, not compute that."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    from ttsd.engine.scorer import PrefixCacheUnsupported

    torch.manual_seed(0)
    policy = Policy(tiny_model_dir, lora=LoraSettings(rank=4, alpha=8), device="cpu", dtype="float32")
    prompts, contexts, responses = _shared_batch(policy.model.config.vocab_size)
    monkeypatch.delattr(GradientCheckpointingLayer, "_can_checkpoint_with_cache")  # as in an older transformers
    with pytest.raises(PrefixCacheUnsupported, match="_can_checkpoint_with_cache"):
        score_tokens(policy, prompts, responses, grad=True)
    # no checkpointing runs without gradients (the teacher), so that path needs no flag
    teacher = score_tokens(policy, contexts, responses, top_k=0)
    assert teacher.mask.sum() == sum(len(r) for r in responses)


def test_packing_by_hand_with_and_without_a_shared_prefix():
    prompts, responses = [[1, 2, 3, 4], [1, 2, 5]], [[7, 8], [9]]
    batch = pack_micro_batch(prompts, responses, shared=2, given=[torch.tensor([[4, 5], [6, 7]]), torch.tensor([[8, 9]])])
    assert batch.prefix == [1, 2]
    assert batch.input_ids.tolist() == [[3, 4, 7, 8], [5, 9, 0, 0]]  # right padding after the prefix
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]]
    # Column c of row b predicts input_ids[b, c + 1]: 4 -> 7, 7 -> 8 in row 0; 5 -> 9 in row 1.
    assert batch.rows.tolist() == [0, 0, 1] and batch.cols.tolist() == [1, 2, 0]
    assert [batch.input_ids[r, c + 1].item() for r, c in zip(batch.rows, batch.cols)] == batch.targets.tolist() == [7, 8, 9]
    assert batch.given.tolist() == [[4, 5], [6, 7], [8, 9]] and batch.sizes == [2, 1]

    whole = pack_micro_batch(prompts, responses, shared=0)
    assert whole.prefix == [] and whole.input_ids.tolist() == [[1, 2, 3, 4, 7, 8], [1, 2, 5, 9, 0, 0]]
    assert whole.attention_mask.tolist() == [[1] * 6, [1, 1, 1, 1, 0, 0]]
    assert whole.cols.tolist() == [3, 4, 2] and whole.given.shape == (3, 0)


def test_padding_back_puts_each_row_in_place():
    def row(*values):
        t = torch.tensor(values, dtype=torch.float32)
        return t, t[:, None].repeat(1, 2), t[:, None].long().repeat(1, 2), t[:, None] * 10

    scores = pad_back({0: row(1.0, 2.0), 2: row(3.0)}, lengths=[2, 0, 1], top_k=2, given_width=1, device="cpu")
    assert scores.response_logprobs.tolist() == [[1.0, 2.0], [0.0, 0.0], [3.0, 0.0]]
    assert scores.mask.tolist() == [[True, True], [False, False], [True, False]]
    assert scores.topk_ids[:, :, 1].tolist() == [[1, 2], [0, 0], [3, 0]]
    assert scores.given_logprobs[..., 0].tolist() == [[10.0, 20.0], [0.0, 0.0], [30.0, 0.0]]
    assert pad_back({}, [0, 0], top_k=0, given_width=None, device="cpu").response_logprobs.shape == (2, 0)
    none = pad_back({}, [0, 0], top_k=0, given_width=None, device="cpu")
    assert none.topk_logprobs is None and none.given_logprobs is None and none.mask.shape == (2, 0)

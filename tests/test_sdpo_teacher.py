"""The self-teacher: EMA arithmetic, the weight swap on real PEFT models, the three teachers' scores."""

import copy

import pytest
import torch

from ttsd.engine.lora import adapter_parameters
from ttsd.sdpo.teacher import EmaTeacher, FrozenTeacher, TrustRegionTeacher, ema_update, make_teacher


def _tiny_peft_mlp(seed: int = 0, with_base: bool = False):
    import peft

    torch.manual_seed(seed)
    base = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    untouched = copy.deepcopy(base)  # get_peft_model wraps `base` in place
    # init_lora_weights=False: B is random too, so the adapter changes the output from the start
    config = peft.LoraConfig(r=2, lora_alpha=2, target_modules=["0", "2"], init_lora_weights=False)
    model = peft.get_peft_model(base, config)
    return (model, untouched) if with_base else model


def _step(model, x, lr=0.1):
    """One SGD step on a simple loss: moves every LoRA parameter."""
    model.zero_grad()
    model(x).pow(2).sum().backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p -= lr * p.grad


def test_ema_update_by_hand():
    teacher = {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor([0.0])}
    student = {"w": torch.tensor([3.0, -2.0]), "b": torch.tensor([4.0])}
    # rate 0.25: 0.75·1 + 0.25·3 = 1.5;  0.75·2 + 0.25·(−2) = 1.0;  0.75·0 + 0.25·4 = 1.0
    new = ema_update(teacher, student, 0.25)
    assert new["w"].tolist() == [1.5, 1.0] and new["b"].tolist() == [1.0]
    assert teacher["w"].tolist() == [1.0, 2.0]  # pure: the inputs are untouched
    assert ema_update(teacher, student, 0.0)["w"].tolist() == [1.0, 2.0]
    assert ema_update(teacher, student, 1.0)["w"].tolist() == [3.0, -2.0]
    with pytest.raises(ValueError, match="rate"):
        ema_update(teacher, student, 1.5)
    with pytest.raises(ValueError, match="different tensors"):
        ema_update(teacher, {"w": student["w"]}, 0.5)


def test_adapter_parameters_selects_only_lora_of_the_named_adapter():
    model = _tiny_peft_mlp()
    params = adapter_parameters(model)
    assert sorted(params) == [  # PEFT's names without the adapter's
        "base_model.model.0.lora_A.weight",
        "base_model.model.0.lora_B.weight",
        "base_model.model.2.lora_A.weight",
        "base_model.model.2.lora_B.weight",
    ]
    live = dict(model.named_parameters())
    assert params["base_model.model.0.lora_A.weight"] is live["base_model.model.0.lora_A.default.weight"]
    with pytest.raises(KeyError, match="no LoRA parameters"):
        adapter_parameters(model, "teacher")


def test_ema_teacher_trails_the_student():
    model = _tiny_peft_mlp()
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
    teacher = EmaTeacher(model, rate=0.1)
    initial = {n: t.clone() for n, t in teacher.weights().items()}
    assert teacher.max_abs_difference() == 0.0

    _step(model, x)
    student_now = {n: p.detach().clone() for n, p in adapter_parameters(model).items()}
    assert teacher.max_abs_difference() > 0.0  # the student moved, the teacher not yet
    teacher.update()
    for name, theta in teacher.weights().items():
        assert torch.allclose(theta, 0.9 * initial[name] + 0.1 * student_now[name], atol=1e-7)
    assert teacher.max_abs_difference() > 0.0  # it trails: not equal to the student


def test_rate_zero_keeps_the_initial_teacher():
    model = _tiny_peft_mlp()
    x = torch.randn(5, 4)
    teacher = EmaTeacher(model, rate=0.0)
    initial = {n: t.clone() for n, t in teacher.weights().items()}
    for _ in range(3):
        _step(model, x)
        teacher.update()
    assert all(torch.equal(initial[n], t) for n, t in teacher.weights().items())
    assert teacher.max_abs_difference() > 0.0


def test_swap_computes_the_teacher_and_restores_the_student_exactly():
    model = _tiny_peft_mlp()
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(2))
    teacher = EmaTeacher(model, rate=0.5)
    frozen_teacher_model = copy.deepcopy(model)  # holds the teacher weights (= the initial student)
    _step(model, x)
    student_before = {n: p.detach().clone() for n, p in adapter_parameters(model).items()}
    student_out = model(x).detach()

    with teacher.swapped_in():
        inside = model(x)
        assert not inside.requires_grad
    assert torch.allclose(inside, frozen_teacher_model(x).detach(), atol=1e-6)
    assert not torch.allclose(inside, student_out, atol=1e-4)
    for name, p in adapter_parameters(model).items():
        assert torch.equal(p.detach(), student_before[name])
    assert torch.equal(model(x).detach(), student_out)

    with pytest.raises(RuntimeError, match="boom"):  # restored on errors too
        with teacher.swapped_in():
            raise RuntimeError("boom")
    for name, p in adapter_parameters(model).items():
        assert torch.equal(p.detach(), student_before[name])


def test_swap_between_forward_and_backward_keeps_student_gradients():
    model = _tiny_peft_mlp()
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(3))
    teacher = EmaTeacher(model, rate=0.5)
    _step(model, x)  # teacher ≠ student from here on

    model.zero_grad()
    model(x).pow(2).sum().backward()
    reference = {n: p.grad.clone() for n, p in adapter_parameters(model).items()}

    model.zero_grad()
    loss = model(x).pow(2).sum()  # student graph built first ...
    with teacher.swapped_in():  # ... teacher pass in between ...
        model(x)
    loss.backward()  # ... backward afterwards: same gradients
    for name, p in adapter_parameters(model).items():
        assert torch.equal(p.grad, reference[name])


def test_state_dict_round_trip():
    model = _tiny_peft_mlp()
    teacher = EmaTeacher(model, rate=0.3)
    _step(model, torch.randn(5, 4))
    teacher.update()
    state = teacher.state_dict()

    other = EmaTeacher(model, rate=0.01)
    other.load_state_dict(state)
    assert other.rate == 0.3
    assert all(torch.equal(other.weights()[n], t) for n, t in teacher.weights().items())
    with pytest.raises(ValueError, match="do not match"):
        other.load_state_dict({"rate": 0.1, "weights": {"x": torch.zeros(1)}})


def test_lerping_hidden_states_equals_lerping_logits_through_a_linear_head():
    gen = torch.Generator().manual_seed(6)
    head = torch.nn.Linear(16, 50, bias=False)
    h_ref, h_stu = torch.randn(2, 3, 16, generator=gen), torch.randn(2, 3, 16, generator=gen)
    with torch.no_grad():
        via_hidden = head(torch.lerp(h_ref, h_stu, 0.3))
        via_logits = torch.lerp(head(h_ref), head(h_stu), 0.3)
    assert torch.allclose(via_hidden, via_logits, atol=1e-5)


def test_each_teacher_scores_with_its_own_weights(tiny_model_dir):
    """frozen = the adapter off; trust region α = lerp(frozen, student, α) in logits (0 and 1 are its
    ends); EMA = the student's weights at construction until updated; make_teacher picks by name."""
    from ttsd.engine.policy import LoraSettings, Policy
    from ttsd.engine.scorer import score_tokens

    torch.manual_seed(0)
    policy = Policy(tiny_model_dir, lora=LoraSettings(rank=4, alpha=8), device="cpu", dtype="float32")
    contexts = [[5, 17, 42, 7, 99, 3], [8, 8, 30]]
    responses = [[11, 12, 13], [40, 41]]
    ema = make_teacher("ema", policy, ema_rate=0.5)
    with torch.no_grad():
        for p in policy.trainable_parameters():
            p.add_(0.1 * torch.randn_like(p))

    def response_logprobs(teacher):
        return teacher.scores(policy, contexts, responses, temperature=0.8).response_logprobs

    student = score_tokens(policy, contexts, responses, temperature=0.8, top_k=0).response_logprobs
    frozen = response_logprobs(make_teacher("frozen", policy))
    with policy.base_weights():
        torch.testing.assert_close(frozen, score_tokens(policy, contexts, responses, temperature=0.8, top_k=0).response_logprobs)
    assert not torch.allclose(frozen, student, atol=1e-3)
    torch.testing.assert_close(response_logprobs(TrustRegionTeacher(0.0)), frozen, atol=1e-5, rtol=0)
    torch.testing.assert_close(response_logprobs(TrustRegionTeacher(1.0)), student, atol=1e-5, rtol=0)
    halfway = response_logprobs(make_teacher("trust-region", policy, trust_region_alpha=0.5))
    assert not torch.allclose(halfway, frozen, atol=1e-4) and not torch.allclose(halfway, student, atol=1e-4)
    # the EMA copy was taken before the student moved: B = 0, so it is the base model
    assert isinstance(ema, EmaTeacher) and ema.max_abs_difference() > 0
    torch.testing.assert_close(response_logprobs(ema), frozen, atol=1e-5, rtol=0)
    ema.update()  # half way to the student now: neither end
    moved = response_logprobs(ema)
    assert not torch.allclose(moved, frozen, atol=1e-4) and not torch.allclose(moved, student, atol=1e-4)
    assert isinstance(make_teacher("ema", policy, ema_rate=0.0), FrozenTeacher)  # ρ = 0 never moves
    with pytest.raises(ValueError):
        TrustRegionTeacher(1.5)


@pytest.mark.slow
def test_ema_teacher_on_a_tiny_causal_lm(tiny_model_dir):
    import peft
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16)
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    model = peft.get_peft_model(base, config)
    ids = torch.tensor([[5, 17, 42, 7, 99, 3]])
    params = adapter_parameters(model)
    assert len(params) == 2 * 2 * 2  # 2 layers × (q, v) × (A, B)

    teacher = EmaTeacher(model, rate=0.01)
    assert all(t.dtype == torch.float32 for t in teacher.weights().values())
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    teacher.update()
    assert teacher.max_abs_difference() > 0.0

    student_logits = model(input_ids=ids).logits.detach()
    with teacher.swapped_in():
        teacher_logits = model(input_ids=ids).logits
    assert not torch.equal(teacher_logits, student_logits)
    assert torch.equal(model(input_ids=ids).logits.detach(), student_logits)

"""The self-teacher: EMA arithmetic, the weight swap on real PEFT models, the trust-region teacher."""

import copy

import pytest
import torch

from ttsd.sdpo.teacher import (
    EmaTeacher,
    adapter_parameters,
    ema_update,
    ema_update_,
    trust_region_logits,
    trust_region_logprobs,
    trust_region_teacher_logits,
)


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


def test_in_place_ema_matches_the_pure_one():
    teacher = {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor([0.0])}
    student = {"w": torch.tensor([3.0, -2.0]), "b": torch.tensor([4.0])}
    expected = ema_update(teacher, student, 0.25)
    live = teacher["w"]
    ema_update_(teacher, student, 0.25)
    assert teacher["w"] is live and live.tolist() == expected["w"].tolist() == [1.5, 1.0]
    assert teacher["b"].tolist() == [1.0] and student["w"].tolist() == [3.0, -2.0]
    with pytest.raises(ValueError):
        ema_update_(teacher, student, -0.1)


def test_adapter_parameters_selects_only_lora_of_the_named_adapter():
    model = _tiny_peft_mlp()
    names = sorted(adapter_parameters(model))
    assert names == [
        "base_model.model.0.lora_A.default.weight",
        "base_model.model.0.lora_B.default.weight",
        "base_model.model.2.lora_A.default.weight",
        "base_model.model.2.lora_B.default.weight",
    ]
    with pytest.raises(ValueError, match="no LoRA parameters"):
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


def test_trust_region_interpolates_between_reference_and_student():
    gen = torch.Generator().manual_seed(4)
    ref, stu = torch.randn(2, 3, 7, generator=gen), torch.randn(2, 3, 7, generator=gen)
    assert torch.equal(trust_region_logits(ref, stu, 0.0), ref)
    assert torch.equal(trust_region_logits(ref, stu, 1.0), stu)
    assert torch.allclose(trust_region_logits(ref, stu, 0.25), 0.75 * ref + 0.25 * stu)

    logp = trust_region_logprobs(ref, stu, 0.25, temperature=0.7)
    assert torch.allclose(logp.exp().sum(-1), torch.ones(2, 3))
    assert torch.allclose(logp, torch.log_softmax((0.75 * ref + 0.25 * stu) / 0.7, -1), atol=1e-6)
    # lerping full-vocabulary log-probs instead of logits gives the same teacher
    from_logprobs = trust_region_logprobs(torch.log_softmax(ref, -1), torch.log_softmax(stu, -1), 0.25, 0.7)
    assert torch.allclose(from_logprobs, logp, atol=1e-6)
    with pytest.raises(ValueError):
        trust_region_logits(ref, stu, 1.5)


def test_lerping_hidden_states_equals_lerping_logits_through_a_linear_head():
    gen = torch.Generator().manual_seed(6)
    head = torch.nn.Linear(16, 50, bias=False)
    h_ref, h_stu = torch.randn(2, 3, 16, generator=gen), torch.randn(2, 3, 16, generator=gen)
    with torch.no_grad():
        via_hidden = head(trust_region_logits(h_ref, h_stu, 0.3))
        via_logits = trust_region_logits(head(h_ref), head(h_stu), 0.3)
    assert torch.allclose(via_hidden, via_logits, atol=1e-5)


def test_trust_region_teacher_on_a_peft_model():
    model, base = _tiny_peft_mlp(with_base=True)
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        reference, student = base(x), model(x)
    assert not torch.allclose(reference, student, atol=1e-4)
    assert torch.allclose(trust_region_teacher_logits(model, 0.0, x), reference, atol=1e-6)
    assert torch.allclose(trust_region_teacher_logits(model, 1.0, x), student, atol=1e-6)
    assert torch.allclose(trust_region_teacher_logits(model, 0.5, x), (reference + student) / 2, atol=1e-6)


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

    with model.disable_adapter():
        reference = model(input_ids=ids).logits.detach()
    lerped = trust_region_teacher_logits(model, 0.0, input_ids=ids)
    assert torch.equal(lerped, reference)

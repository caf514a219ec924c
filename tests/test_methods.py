"""The three methods on the tiny random model: learning changes the adapter every step, the run
directory records it, and sampling without learning is reproducible for a seed."""

from __future__ import annotations

import json

import pytest

from ttsd.config import SolveConfig
from ttsd.engine.hardware import dtype_name, pick_dtype
from ttsd.methods import solve
from ttsd.problems import load_problem
from tests.conftest import REPO


@pytest.fixture(scope="module")
def problem():
    return load_problem(REPO / "problems" / "examples" / "sum-two-numbers.json")


def _config(tiny_model_dir, **overrides) -> SolveConfig:
    base = dict(model=str(tiny_model_dir), backend="hf", budget=4, batch_size=2, max_tokens=24, seed=3,
                learning_rate=1e-2, lora_rank=4, lora_alpha=8.0, judge_workers=2)
    return SolveConfig(**{**base, **overrides})


def test_sdpo_updates_adapter_every_step_but_the_last_and_records_loss_and_costs(tiny_model_dir, problem, tmp_path):
    import torch

    summary = solve(problem, _config(tiny_model_dir, budget=6), tmp_path / "run")
    assert summary.attempts_used == 6 and not summary.discovered and summary.finished
    steps = [json.loads(line) for line in (tmp_path / "run" / "steps.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == [0, 1, 2]
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert (saved["device"], saved["dtype"]) == ("cpu", dtype_name(pick_dtype("auto", "cpu")))  # 'auto' resolved
    assert all(s["loss"] is not None and s["grad_norm"] > 0 for s in steps[:2])
    # the budget's last batch: no attempt is left to use an update, so none is made
    assert steps[2]["loss"] is None and steps[2]["extra"] == {"learning_skipped": "no attempts left in the budget"}
    assert steps[2]["scored_tokens"] == steps[2]["trained_tokens"] == 0 and steps[2]["time_train_s"] == 0
    attempts = [json.loads(a) for a in (tmp_path / "run" / "attempts.jsonl").read_text().splitlines()]
    assert [a["k"] for a in attempts] == [1, 2, 3, 4, 5, 6]
    # every attempt's cost; summed over a step's attempts they are the step's numbers
    for step in steps:
        costs = [a["cost"] for a in attempts if a["step"] == step["step"]]
        assert sum(c["wall_s"] for c in costs) == pytest.approx(step["time_step_s"]) and step["time_step_s"] > 0
        assert [c["sampled_tokens"] for c in costs] == [a["num_tokens"] for a in attempts if a["step"] == step["step"]]
        for field in ("sampled_tokens", "prompt_tokens", "scored_tokens", "trained_tokens"):
            assert sum(c[field] for c in costs) == step[field], field
    # a learning step's tokens: rows of prompt (or teacher context) + response, the student's
    # forward and backward and the EMA teacher's one forward, each over every failed attempt
    first = attempts[:2]
    student = sum(a["cost"]["prompt_tokens"] + a["num_tokens"] for a in first)
    assert steps[0]["trained_tokens"] == student
    assert steps[0]["scored_tokens"] > 2 * student  # the teacher's context holds the feedback too
    state = torch.load(tmp_path / "run" / "state" / "trainer-2.pt", weights_only=False)
    assert state["optimizer"]["state"][0]["step"] == 2  # two updates, none on the last batch
    # the EMA teacher trails the student: after an update they differ, but only by a little
    assert all(0 < s["extra"]["ema_weight_distance"] for s in steps[:2])
    # LoRA B starts at zero: after two updates the student adapter is no longer zero
    assert max(v.abs().max().item() for k, v in state["adapter"].items() if "lora_B" in k) > 0
    # the saved EMA teacher covers every adapter tensor, has moved off the zero-initialised B, and
    # trails the student (rate 0.01: after two updates its B is about 2% of the way)
    teacher = state["teacher"]["weights"]
    assert len(teacher) == len(state["adapter"])
    teacher_b = max(v.abs().max().item() for k, v in teacher.items() if "lora_B" in k)
    student_b = max(v.abs().max().item() for k, v in state["adapter"].items() if "lora_B" in k)
    assert 0 < teacher_b < 0.1 * student_b
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").exists()


def test_sdpo_with_the_trust_region_teacher(tiny_model_dir, problem, tmp_path):
    config = _config(tiny_model_dir, teacher="trust-region", trust_region_alpha=0.5)
    summary = solve(problem, config, tmp_path / "tr")
    steps = [json.loads(line) for line in (tmp_path / "tr" / "steps.jsonl").read_text().splitlines()]
    assert summary.attempts_used == 4 and len(steps) == 2
    assert steps[0]["loss"] is not None and steps[0]["grad_norm"] > 0
    # the trust-region teacher runs two backbone passes (reference, student) per row
    student = steps[0]["trained_tokens"]
    assert steps[0]["scored_tokens"] > 3 * student
    assert "ema_weight_distance" not in steps[0]["extra"]  # no EMA copy is kept for this teacher
    saved = json.loads((tmp_path / "tr" / "config.json").read_text())
    assert saved["config"]["teacher"] == "trust-region" and saved["config"]["trust_region_alpha"] == 0.5


def test_gradient_checkpointing_off_gives_the_same_update(tiny_model_dir, problem, tmp_path, monkeypatch):
    import torch

    from ttsd.engine.policy import Policy

    seen = []
    real_init = Policy.__init__

    def recording_init(self, *args, **kwargs):
        seen.append(kwargs.get("gradient_checkpointing"))
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(Policy, "__init__", recording_init)
    adapters = []
    for checkpointing in (True, False):
        run = tmp_path / f"ckpt-{checkpointing}"
        solve(problem, _config(tiny_model_dir, budget=4, gradient_checkpointing=checkpointing), run)
        adapters.append(torch.load(run / "state" / "trainer-0.pt", weights_only=False)["adapter"])
    assert seen == [True, False]
    assert max(v.abs().max().item() for k, v in adapters[0].items() if "lora_B" in k) > 0
    for key in adapters[0]:
        torch.testing.assert_close(adapters[0][key], adapters[1][key], atol=1e-6, rtol=1e-5)


def test_best_of_k_is_reproducible_for_a_seed(tiny_model_dir, problem, tmp_path):
    config = _config(tiny_model_dir, method="best-of-k")
    solve(problem, config, tmp_path / "a")
    solve(problem, config, tmp_path / "b")
    read = lambda d: [json.loads(l)["response"] for l in (tmp_path / d / "attempts.jsonl").read_text().splitlines()]  # noqa: E731
    assert read("a") == read("b") and len(read("a")) == 4
    other = solve(problem, config.model_copy(update={"seed": 4}), tmp_path / "c")
    assert other.attempts_used == 4 and read("c") != read("a")


def test_multi_turn_drops_oldest_feedback_past_the_limit(tiny_model_dir, problem, tmp_path):
    from transformers import AutoTokenizer

    from ttsd.engine.chat import chat_prompt_ids
    from ttsd.prompts import student_messages

    base = len(chat_prompt_ids(AutoTokenizer.from_pretrained(tiny_model_dir), student_messages(problem)))
    limit = max(256, base + 40)  # room for the feedback frame and little more: old feedback must go
    config = _config(tiny_model_dir, method="multi-turn", budget=4, context_limit=limit)
    solve(problem, config, tmp_path / "mt")
    steps = [json.loads(l) for l in (tmp_path / "mt" / "steps.jsonl").read_text().splitlines()]
    assert len(steps) == 4 and steps[0]["extra"]["feedback_dropped"] == 0
    assert steps[-1]["extra"]["feedback_dropped"] > 0
    assert all(s["extra"]["prompt_tokens"] <= limit for s in steps if s["extra"]["feedback_dropped"] < s["step"])


def test_multi_turn_prompt_leaves_room_for_the_answer_within_the_model_length(tiny_model_dir, problem, tmp_path):
    from transformers import AutoTokenizer

    from ttsd.engine.chat import chat_prompt_ids
    from ttsd.prompts import student_messages

    base = len(chat_prompt_ids(AutoTokenizer.from_pretrained(tiny_model_dir), student_messages(problem)))
    max_model_len = max(256, base + 64)
    config = _config(tiny_model_dir, method="multi-turn", budget=4, max_model_len=max_model_len)  # context_limit 32k
    solve(problem, config, tmp_path / "mt")
    steps = [json.loads(l) for l in (tmp_path / "mt" / "steps.jsonl").read_text().splitlines()]
    assert len(steps) == 4 and steps[-1]["extra"]["feedback_dropped"] > 0
    assert all(s["extra"]["prompt_tokens"] <= max_model_len - config.max_tokens for s in steps)


def test_a_resumed_run_keeps_the_dtype_it_started_with(tiny_model_dir, problem, tmp_path, monkeypatch):
    """Resuming with dtype 'auto' (as `ttsd bench` passes its options) keeps the device and dtype
    saved in config.json, so the rest of the run has the same numerics."""
    from ttsd.engine import hardware
    from ttsd.engine.policy import Policy

    class Interrupt(Exception):
        pass

    def stop_after_first_step(record, summary):
        raise Interrupt

    run = tmp_path / "run"
    with pytest.raises(Interrupt):
        solve(problem, _config(tiny_model_dir, dtype="float32"), run, progress=stop_after_first_step)
    assert json.loads((run / "config.json").read_text())["config"]["dtype"] == "float32"

    seen = []
    real_init = Policy.__init__

    def recording_init(self, *args, **kwargs):
        seen.append((kwargs.get("device"), kwargs.get("dtype")))
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(Policy, "__init__", recording_init)
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: True)  # 'auto' alone would pick bf16
    summary = solve(problem, _config(tiny_model_dir, dtype="auto"), run, resume=True)
    assert seen == [("cpu", "float32")] and summary.finished and summary.attempts_used == 4


class RecordingSampler:
    """A real sampler whose protocol calls are written down in order (everything else passes through)."""

    RECORDED = ("sample", "sleep", "wake", "sync_adapter")

    def __init__(self, inner, calls: list) -> None:
        self._inner, self._calls = inner, calls

    def __getattr__(self, name):
        attribute = getattr(self._inner, name)
        if name not in self.RECORDED:
            return attribute

        def recorded(*args, **kwargs):
            self._calls.append(name)
            return attribute(*args, **kwargs)

        return recorded


@pytest.mark.parametrize("backend", ["hf", "vllm"])
def test_sdpo_sleeps_the_sampler_while_it_learns(tiny_model_dir, problem, tmp_path, monkeypatch, backend):
    """Each step: sample, sleep the engine, learn, the trainer gives back its cached memory, wake,
    send the new adapter — through the Sampler protocol, the same calls for either backend."""
    from ttsd.engine.policy import Policy
    from ttsd.methods.scheduler import SharedEngine

    calls: list[str] = []
    make_sampler, release = SharedEngine.make_sampler, Policy.release_cached_memory
    monkeypatch.setattr(SharedEngine, "make_sampler", lambda self: RecordingSampler(make_sampler(self), calls))
    monkeypatch.setattr(Policy, "release_cached_memory", lambda self: calls.append("release") or release(self))
    summary = solve(problem, _config(tiny_model_dir, backend=backend), tmp_path / "run")
    assert summary.attempts_used == 4 and not summary.discovered
    assert calls == ["sample", "sleep", "release", "wake", "sync_adapter", "sample"]  # the last batch learns nothing
    steps = [json.loads(line) for line in (tmp_path / "run" / "steps.jsonl").read_text().splitlines()]
    assert steps[0]["grad_norm"] > 0 and steps[0]["stale_weights_gap"] is not None


def test_context_length_holds_the_prompt_and_max_tokens():
    from ttsd.config import ContextTooLong, context_length

    assert context_length(300, 8192, None, 40960) == 8492  # derived: vLLM never stops an attempt early
    assert context_length(300, 1024, 4096, 8192) == 4096  # an explicit length that holds it is kept
    with pytest.raises(ContextTooLong, match="max_model_len 4096 cannot hold"):
        context_length(300, 8192, 4096, 40960)  # the old default with 8k attempts: refused, not cut
    with pytest.raises(ContextTooLong, match="model's context is 8192"):
        context_length(300, 8192, None, 8192)


@pytest.mark.parametrize("backend", ["hf", "vllm"])
def test_the_sampler_gets_the_prompt_plus_max_tokens_or_the_run_is_refused(tiny_model_dir, problem, tmp_path, monkeypatch, backend):
    """Either backend judges whole attempts: vLLM's context is the prompt + max_tokens; a configured
    max_model_len too short for that, or attempts past the model's own 4096 tokens, stop the run."""
    from transformers import AutoTokenizer

    from ttsd.config import ContextTooLong
    from ttsd.engine.chat import chat_prompt_ids
    from ttsd.methods.scheduler import SharedEngine
    from ttsd.prompts import student_messages

    prompt = len(chat_prompt_ids(AutoTokenizer.from_pretrained(tiny_model_dir), student_messages(problem)))
    samplers = []
    make_sampler = SharedEngine.make_sampler
    monkeypatch.setattr(SharedEngine, "make_sampler", lambda self: samplers.append(make_sampler(self)) or samplers[-1])
    config = _config(tiny_model_dir, method="best-of-k", backend=backend, budget=2)
    assert solve(problem, config, tmp_path / "fits").attempts_used == 2
    if backend == "vllm":
        assert samplers[0].max_model_len == prompt + config.max_tokens  # what the engine was started with
    with pytest.raises(ContextTooLong, match=f"cannot hold a {prompt}-token prompt"):
        solve(problem, config.model_copy(update={"max_model_len": prompt + config.max_tokens - 1}), tmp_path / "short")
    with pytest.raises(ContextTooLong, match="model's context is 4096"):
        solve(problem, config.model_copy(update={"max_tokens": 4096}), tmp_path / "long")


def test_the_baselines_do_not_import_sdpo():
    """The teacher-gap bookkeeping lives on Sdpo: best-of-k and multi-turn load without ttsd.sdpo."""
    import subprocess
    import sys

    def sdpo_modules_after(imports: str) -> str:
        code = f"import sys, {imports}; print(any(m.startswith('ttsd.sdpo') for m in sys.modules))"
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()

    assert sdpo_modules_after("ttsd.methods.best_of_k, ttsd.methods.multi_turn") == "False"
    assert sdpo_modules_after("ttsd.methods.sdpo") == "True"  # the check sees the import where there is one

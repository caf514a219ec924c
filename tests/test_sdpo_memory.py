"""Memory of the learning step: nothing of size (attempts × tokens × vocabulary) is ever held
(measured on a large-vocabulary tiny model), and the estimator's formula behaves as documented."""

from __future__ import annotations

import json
import subprocess
import sys


from tests.conftest import REPO
from ttsd.engine.lora import LoraSettings
from ttsd.sdpo.memory import (
    LearningShape,
    ModelShape,
    estimate_learning_peak,
    largest_fitting,
    longest_fitting_response,
    most_attempts_fitting,
)

QWEN3_8B = ModelShape(layers=36, hidden=4096, intermediate=12288, heads=32, kv_heads=8, head_dim=128,
                      vocab=151936, tied_embeddings=False)


def test_a_learning_step_never_holds_attempts_x_tokens_x_vocabulary(tmp_path):
    """One real step (benchmarks/bench_memory.py: a child process, peak RSS above the RSS before the
    step) of 4 attempts × 1024 tokens with Qwen's 152k vocabulary: one float32 (B, T, V) tensor is
    2.3 GiB; the step must stay under a quarter of that, and near what the estimator says."""
    out = tmp_path / "memory.json"
    attempts, tokens, vocab = 4, 1024, 151936
    run = subprocess.run(
        [sys.executable, "benchmarks/bench_memory.py", "--model-config", "tiny-vocab152k", "--attempts", str(attempts),
         "--response-tokens", str(tokens), "--prompt-tokens", "128", "--device", "cpu", "--dtype", "float32",
         "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    (row,) = json.loads(out.read_text())["rows"]
    step = row["peak_bytes"] - row["baseline_bytes"]
    full_logits = attempts * tokens * vocab * 4
    assert 0 < step < full_logits / 4, (step / 2**30, full_logits / 2**30)
    assert 0.5 < row["ratio"] < 2.0  # measured / expected step
    assert "measured / expected" in run.stdout


def _shape(**overrides) -> LearningShape:
    return LearningShape(**{**dict(attempts=16, prompt_tokens=1024, feedback_tokens=256, response_tokens=8192), **overrides})


def test_qwen3_8b_checkpoints_cost_what_the_issue_says_per_token():
    """(ℓ + 3)·H·b = 39 · 4096 · 2 bytes ≈ 312 KiB per token (#13: "about 310 KiB")."""
    one = estimate_learning_peak(QWEN3_8B, _shape(attempts=1, response_tokens=4096))
    two = estimate_learning_peak(QWEN3_8B, _shape(attempts=1, response_tokens=4096 + 1024))
    per_token = (two.parts["student_graph"] - one.parts["student_graph"]) / 1024
    assert per_token == 39 * 4096 * 2 + 16 * 20 + 16  # layer inputs, plus the kept top-K scores
    assert 300 * 1024 < per_token < 320 * 1024


def test_the_step_grows_with_a_micro_batch_not_with_the_number_of_attempts():
    few, many = (estimate_learning_peak(QWEN3_8B, _shape(attempts=n)) for n in (2, 16))
    assert few.total == many.total  # 8k-token attempts: one per micro-batch either way
    longer = estimate_learning_peak(QWEN3_8B, _shape(response_tokens=15000))
    assert longer.step > many.step
    # 16 × 8192 positions × 152k × 4 bytes would be 74 GiB; the whole step is a few GiB
    assert many.step < 8 * 2**30 < 16 * 8192 * QWEN3_8B.vocab * 4
    assert 15 * 2**30 < many.parts["weights"] < 16 * 2**30  # 8.2B parameters in bf16


def test_checkpointing_off_keeps_every_layers_activations():
    on = estimate_learning_peak(QWEN3_8B, _shape(response_tokens=4096))
    off = estimate_learning_peak(QWEN3_8B, _shape(response_tokens=4096, gradient_checkpointing=False))
    assert off.parts["student_graph"] > 20 * on.parts["student_graph"]


def test_a_float32_adapter_on_a_bf16_base_costs_20_bytes_per_parameter():
    """PEFT keeps LoRA weights float32 on a bf16 base: parameter, gradient and AdamW's two moments
    (4 bytes each), plus the EMA teacher's float32 copy; a first step adds the gradient and moments."""
    estimate = estimate_learning_peak(QWEN3_8B, _shape(response_tokens=4096))
    lora = QWEN3_8B.lora_parameters(LoraSettings())
    held = estimate.parts["adapter_state"] + estimate.parts["adapter_gradients"] + estimate.parts["optimizer_moments"]
    assert held == 20 * lora
    assert estimate.total - estimate.step == estimate.parts["weights"] + 8 * lora  # before the step: parameter + EMA
    activations = estimate.parts["student_graph"] + max(estimate.parts["teacher_pass"], estimate.parts["student_backward"])
    assert estimate.step == activations + 12 * lora


def test_an_8b_adapter_outgrows_dockers_default_shared_memory():
    """#13: Qwen3-8B, rank 16 on every linear layer, bf16: ~87 MB, more than Docker's 64 MB /dev/shm."""
    assert 86e6 < QWEN3_8B.lora_parameters(LoraSettings()) * 2 < 88e6


def test_concurrent_runs_add_an_adapter_state_each_and_the_kv_cache_of_every_batch():
    """Qwen3-8B, rank 16 on all seven projections: 36 · 16 · 75,776 = 43,646,976 LoRA parameters,
    20 bytes each kept per run (fp32 parameter, gradient and two AdamW moments, fp32 EMA copy); the
    KV cache of 16 rows of 1024 + 8192 tokens is 16 · 9216 · 36 layers · 2 · 1024 · 2 bytes."""
    from ttsd.sdpo.memory import estimate_concurrent_peak

    one = estimate_concurrent_peak(QWEN3_8B, _shape(), learners=1, sampled_rows=16, sampled_tokens=9216)
    assert one.parts["adapter_states"] == 43_646_976 * 20 == 872_939_520
    assert one.parts["kv_cache"] == 21_743_271_936
    assert one.total == one.parts["weights"] + 872_939_520 + max(one.parts["learning_step"], 21_743_271_936)
    alone = estimate_learning_peak(QWEN3_8B, _shape())
    # what a step adds beyond the gradients and moments a run keeps: one step at a time
    assert one.parts["learning_step"] == alone.step - 43_646_976 * 12
    assert alone.total == one.parts["weights"] + one.parts["adapter_states"] + one.parts["learning_step"]
    many = estimate_concurrent_peak(QWEN3_8B, _shape(), learners=8, sampled_rows=8 * 16, sampled_tokens=9216)
    assert many.parts["adapter_states"] == 8 * 872_939_520 and many.parts["kv_cache"] == 8 * 21_743_271_936
    assert many.total == many.parts["weights"] + 8 * 872_939_520 + 8 * 21_743_271_936


def test_largest_fitting_searches_each_segment_from_the_top():
    """A sawtooth (falls after 10 and after 30): the answer is in the top segment that fits at its start."""
    memory = {n: (n if n <= 10 else n - 8 if n <= 30 else n - 25) for n in range(1, 41)}
    for budget in range(0, 30):
        brute = max((n for n, m in memory.items() if m <= budget), default=None)
        assert largest_fitting(lambda n: memory[n] <= budget, 1, 40, [10, 30]) == brute, budget
    # without the segment ends a bisection misses it: budget 10 fits 18 (= 18 - 8) and 35 (= 35 - 25)
    assert largest_fitting(lambda n: memory[n] <= 10, 1, 40, [10, 30]) == 35
    assert largest_fitting(lambda n: memory[n] <= 10, 1, 40) == 18
    assert largest_fitting(lambda n: True, 5, 4) is None


TINY = ModelShape(layers=2, hidden=64, intermediate=128, heads=2, kv_heads=1, head_dim=32, vocab=512, tied_embeddings=True)


def test_longest_fitting_response_equals_a_scan_of_every_length():
    """The estimate falls where a micro-batch takes fewer attempts; the search finds what a scan of
    every length finds, for budgets across the whole range (including ones a bisection would miss)."""
    step = LearningShape(attempts=6, prompt_tokens=40, feedback_tokens=24, response_tokens=1, max_batch_tokens=600,
                         dtype_bytes=4)
    limit = 900
    totals = {n: estimate_learning_peak(TINY, step.model_copy(update={"response_tokens": n})).total for n in range(1, limit + 1)}
    assert any(totals[n + 1] < totals[n] for n in range(1, limit)), "the estimate should not be monotone here"
    low, high = min(totals.values()), max(totals.values())
    for fraction in [i / 40 for i in range(-1, 42)]:
        budget = low + fraction * (high - low)
        brute = max((n for n, total in totals.items() if total <= budget), default=None)
        assert longest_fitting_response(TINY, step, budget, limit) == brute, fraction


def test_most_attempts_fitting_equals_a_scan_and_a_step_scale_shrinks_it():
    step = LearningShape(attempts=1, prompt_tokens=40, feedback_tokens=24, response_tokens=30, max_batch_tokens=600,
                         dtype_bytes=4)
    totals = {a: estimate_learning_peak(TINY, step.model_copy(update={"attempts": a})).total for a in range(1, 21)}
    for budget in sorted(set(totals.values())) + [min(totals.values()) - 1]:
        brute = max((a for a, total in totals.items() if total <= budget), default=None)
        assert most_attempts_fitting(TINY, step, budget, 20) == brute
    # the micro-batch is full at 600 // 70 = 8 attempts: more cost nothing
    assert totals[8] == totals[20] and totals[7] < totals[8]
    budget = totals[5]
    assert most_attempts_fitting(TINY, step, budget, 20) == 5
    assert most_attempts_fitting(TINY, step, budget, 20, step_scale=2.0) < 5


def test_qwen3_8b_16_attempts_fit_80_gib_at_every_length_its_context_allows():
    """The device check's question, answered by the estimate: in 80 GiB every response up to the
    model's 40960-token context fits; in 40 GiB the answer fits and one token more does not."""
    step = _shape()
    limit = 40960 - 1024 - 256
    assert longest_fitting_response(QWEN3_8B, step, 80 * 2**30, limit) == limit
    at = lambda n: estimate_learning_peak(QWEN3_8B, step.model_copy(update={"response_tokens": n})).total
    longest = longest_fitting_response(QWEN3_8B, step, 40 * 2**30, limit)
    assert 8192 < longest < limit and at(longest) <= 40 * 2**30 < at(longest + 1)
    assert at(8192) < at(4096)  # one 9k-token attempt per micro-batch instead of three 5k ones

"""Memory of the learning step: nothing of size (attempts × tokens × vocabulary) is ever held
(measured on a large-vocabulary tiny model), and the estimator's formula behaves as documented."""

from __future__ import annotations

import json
import subprocess
import sys


from tests.conftest import REPO
from ttsd.engine.lora import LoraSettings
from ttsd.sdpo.memory import LearningShape, ModelShape, estimate_learning_peak

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
    assert on.parts["adapter_state"] == QWEN3_8B.lora_parameters(LoraSettings()) * (4 * 2 + 4)


def test_an_8b_adapter_outgrows_dockers_default_shared_memory():
    """#13: Qwen3-8B, rank 16 on every linear layer, bf16: ~87 MB, more than Docker's 64 MB /dev/shm."""
    assert 86e6 < QWEN3_8B.lora_parameters(LoraSettings()) * 2 < 88e6


def test_concurrent_runs_add_an_adapter_state_each_and_the_kv_cache_of_every_batch():
    """Qwen3-8B, rank 16 on all seven projections: 36 · 16 · 75,776 = 43,646,976 LoRA parameters,
    12 bytes each in bf16 (parameter, gradient, two AdamW moments, fp32 EMA); the KV cache of 16 rows
    of 1024 + 8192 tokens is 16 · 9216 · 36 layers · 2 · 1024 · 2 bytes."""
    from ttsd.sdpo.memory import estimate_concurrent_peak

    one = estimate_concurrent_peak(QWEN3_8B, _shape(), learners=1, sampled_rows=16, sampled_tokens=9216)
    assert one.parts["adapter_states"] == 523_763_712
    assert one.parts["kv_cache"] == 21_743_271_936
    assert one.total == one.parts["weights"] + 523_763_712 + max(one.parts["learning_step"], 21_743_271_936)
    assert one.parts["learning_step"] == estimate_learning_peak(QWEN3_8B, _shape()).step  # one step at a time
    many = estimate_concurrent_peak(QWEN3_8B, _shape(), learners=8, sampled_rows=8 * 16, sampled_tokens=9216)
    assert many.parts["adapter_states"] == 8 * 523_763_712 and many.parts["kv_cache"] == 8 * 21_743_271_936
    assert many.total == many.parts["weights"] + 8 * 523_763_712 + 8 * 21_743_271_936

"""The expected peak memory of one learning step (`ttsd.sdpo.learn.learn_from_batch`), in bytes.

Written for the trainer's accelerator (the engine sleeps during the step, see docs/gpu.md); the
benchmark `benchmarks/bench_memory.py` prints it beside the measured peak. Notation: b bytes per
element of the model's dtype; ℓ layers, H hidden, I intermediate, q = heads·head_dim,
k = kv_heads·head_dim, V vocabulary, r LoRA rank, K the student's top-K; per attempt P prompt,
F feedback and R response tokens; M = max_batch_tokens.

Micro-batches (what `learn_from_batch` forms): g = clamp(⌊M / (P + R)⌋, 1, attempts) attempts at a
time. When g ≥ 2 their common prompt runs once (S = P − 1 prefix tokens), so the student's pass
has T = g·(P + R − S) row tokens plus S prefix tokens, and N = g·R response tokens. The teacher,
on P + F + R tokens per attempt, forms its own micro-batches within the same g attempts.

    peak = weights + adapter state + student graph + max(teacher pass, student backward)

    weights         = parameters · b
    adapter state   = P_lora · (4b + 4)             parameter, gradient, AdamW's two moments, EMA copy in fp32
    student graph   = alive from the micro-batch's forward until its backward:
        with gradient checkpointing:   (ℓ + 3)·(T + S)·H·b       each layer's input, final norm, gathered states
        without:                       ℓ·(T + S)·A               every layer's activations
        + g·(P + R − S)·(P + R)  (g ≥ 2)                          the boolean attention mask
        + N·(16K + 16)                                            kept per-token log-probs and ids (fp32/int64)
    teacher pass    = T_t·(H·b·3 + A_nograd) + ℓ·S_t·2k·b + 3·C   no graph: one layer at a time
    student backward = max(T·A + 2·T·(H + I)·b,  3·C)             one layer recomputed (checkpointing) and its
                                                                  gradients; or one logit chunk's recompute
                                                                  and gradients
    A = (10H + 6q + 5k + 4I + 7r)·b + 16H   one decoder layer's saved activations per token (norms in fp32)
    A_nograd = (2H + q + 2k + 3I)·b         the widest intermediates of a forward without a graph
    C = min(chunk, N)·V·4 ≤ LOGIT_CHUNK_BYTES   one float32 block of logits (`ttsd.engine.scorer`)

Without checkpointing there is no recompute: the backward's transient is the gradients alone.
The shared prefix's pass is checkpointed like the rows (`ttsd.engine.scorer`), so it adds S tokens
of layer inputs, not S tokens of every layer's activations.

Calibration: A's 10H and the 3·C were measured, not derived — SmolLM2-135M's shape in bf16 on a CPU
without checkpointing gives 42 KB of saved activations per token and layer (the 5H + … count gives
36 KB), and one logit chunk's recompute + gradients peak at 3 blocks. On a GPU the device check
prints measured / expected (benchmarks/bench_memory.py).
What the formula leaves out: the caching allocator's fragmentation (reserved > allocated on a GPU),
attention kernels' own workspaces, and on a CPU the runtime's resident memory (the benchmark
measures the step above a baseline there). No term is (attempts × R × V): the scorer never forms one.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from ttsd.engine.lora import LoraSettings
from ttsd.engine.scorer import LOGIT_CHUNK_BYTES, MAX_BATCH_TOKENS, MIN_SHARED_PREFIX


class ModelShape(BaseModel):
    """The sizes of a decoder-only transformer that set its memory."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied_embeddings: bool

    @classmethod
    def from_config(cls, config: Any) -> "ModelShape":
        """From a transformers config (Llama, Qwen2, Qwen3 and alike)."""
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        return cls(
            layers=config.num_hidden_layers, hidden=config.hidden_size, intermediate=config.intermediate_size,
            heads=config.num_attention_heads, kv_heads=getattr(config, "num_key_value_heads", None) or config.num_attention_heads,
            head_dim=head_dim, vocab=config.vocab_size, tied_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
        )

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def parameters(self) -> int:
        """Weights of the attention and MLP projections and the embeddings (norms are negligible)."""
        h, q, k, i = self.hidden, self.q_dim, self.kv_dim, self.intermediate
        per_layer = h * q + 2 * h * k + q * h + 3 * h * i
        return self.layers * per_layer + self.vocab * h * (1 if self.tied_embeddings else 2)

    def lora_parameters(self, lora: LoraSettings) -> int:
        """r·(in + out) per wrapped projection and layer."""
        h, q, k, i = self.hidden, self.q_dim, self.kv_dim, self.intermediate
        sizes = {"q_proj": (h, q), "k_proj": (h, k), "v_proj": (h, k), "o_proj": (q, h),
                 "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}
        return self.layers * sum(lora.rank * (a + b) for name, (a, b) in sizes.items() if name in lora.target_modules)


class LearningShape(BaseModel):
    """One learning step's batch and settings."""

    attempts: int = Field(ge=1)
    prompt_tokens: int = Field(ge=1)
    feedback_tokens: int = Field(ge=0)
    response_tokens: int = Field(ge=1)
    top_k: int = 20
    max_batch_tokens: int = MAX_BATCH_TOKENS
    lora: LoraSettings = Field(default_factory=LoraSettings)
    gradient_checkpointing: bool = True
    dtype_bytes: int = 2
    device: str = "cuda"
    logit_chunk_bytes: int = LOGIT_CHUNK_BYTES


class MemoryEstimate(BaseModel):
    total: int  # bytes at the peak
    step: int  # what the step adds above weights and adapter state
    parts: dict[str, int]


def _rows_per_micro_batch(tokens_per_row: int, attempts: int, max_batch_tokens: int) -> int:
    return max(1, min(attempts, max_batch_tokens // tokens_per_row))


def _shared_prefix(rows: int, prompt_tokens: int) -> int:
    shared = prompt_tokens - 1 if rows >= 2 else 0
    return shared if shared >= MIN_SHARED_PREFIX else 0


def estimate_learning_peak(model: ModelShape, step: LearningShape) -> MemoryEstimate:
    """The module docstring's formula at these shapes."""
    b = step.dtype_bytes
    h, q, k, i, r = model.hidden, model.q_dim, model.kv_dim, model.intermediate, step.lora.rank
    p, f, n = step.prompt_tokens, step.feedback_tokens, step.response_tokens
    layer_activations = (10 * h + 6 * q + 5 * k + 4 * i + 7 * r) * b + 16 * h
    forward_only = (2 * h + q + 2 * k + 3 * i) * b
    chunk_positions = max(1, step.logit_chunk_bytes // (4 * model.vocab))

    rows = _rows_per_micro_batch(p + n, step.attempts, step.max_batch_tokens)
    shared = _shared_prefix(rows, p)
    row_tokens = rows * (p + n - shared)
    responses = rows * n
    chunk = min(chunk_positions, responses) * model.vocab * 4
    if step.gradient_checkpointing:
        graph = (model.layers + 3) * (row_tokens + shared) * h * b
        backward = max(row_tokens * layer_activations + 2 * row_tokens * (h + i) * b, 3 * chunk)
    else:
        graph = model.layers * (row_tokens + shared) * layer_activations
        backward = max(2 * row_tokens * (h + i) * b, 3 * chunk)
    mask = rows * (p + n - shared) * (p + n) if rows > 1 else 0  # one whole row runs causal, maskless
    graph += mask + responses * (16 * step.top_k + 16)

    teacher_rows = _rows_per_micro_batch(p + f + n, rows, step.max_batch_tokens)
    teacher_shared = _shared_prefix(teacher_rows, p)
    teacher_tokens = teacher_rows * (p + f + n - teacher_shared)
    teacher = teacher_tokens * (3 * h * b + forward_only) + model.layers * teacher_shared * 2 * k * b + 3 * chunk

    parts = {
        "weights": model.parameters() * b,
        "adapter_state": model.lora_parameters(step.lora) * (4 * b + 4),
        "student_graph": graph,
        "teacher_pass": teacher,
        "student_backward": backward,
    }
    step_bytes = graph + max(teacher, backward)
    return MemoryEstimate(total=parts["weights"] + parts["adapter_state"] + step_bytes, step=step_bytes, parts=parts)


def estimate_concurrent_peak(model: ModelShape, step: LearningShape, learners: int, sampled_rows: int, sampled_tokens: int) -> MemoryEstimate:
    """The peak of R runs on one engine (`ttsd bench --concurrent`): one base model, `learners`
    adapters each with its gradient, AdamW moments and fp32 EMA copy, and the larger of one learning
    step (runs learn one at a time, the sampler asleep) and the sampler's KV cache for
    `sampled_rows` rows of `sampled_tokens` tokens (every run's batch in one call):

        peak = weights + learners · adapter state + max(step, rows · tokens · ℓ · 2k · b)
    """
    one = estimate_learning_peak(model, step)
    kv_cache = sampled_rows * sampled_tokens * model.layers * 2 * model.kv_dim * step.dtype_bytes
    adapters = learners * one.parts["adapter_state"]
    parts = {"weights": one.parts["weights"], "adapter_states": adapters, "learning_step": one.step, "kv_cache": kv_cache}
    return MemoryEstimate(total=parts["weights"] + adapters + max(one.step, kv_cache), step=max(one.step, kv_cache), parts=parts)

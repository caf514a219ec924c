"""The expected peak memory of one learning step (`ttsd.sdpo.learn.learn_from_batch`), in bytes.

Written for the trainer's accelerator (the engine sleeps during the step, see docs/gpu.md); the
benchmark `benchmarks/bench_memory.py` prints it beside the measured peak. Notation: b bytes per
element of the model's dtype; ℓ layers, H hidden, I intermediate, q = heads·head_dim,
k = kv_heads·head_dim, V vocabulary, r LoRA rank, a bytes per element of the adapter (4: PEFT
keeps LoRA parameters in float32 on a bf16 or fp16 base), K the student's top-K; per attempt P prompt,
F feedback and R response tokens; M = max_batch_tokens.

Micro-batches (what `learn_from_batch` forms): g = clamp(⌊M / (P + R)⌋, 1, attempts) attempts at a
time. When g ≥ 2 their common prompt runs once (S = P − 1 prefix tokens), so the student's pass
has T = g·(P + R − S) row tokens plus S prefix tokens, and N = g·R response tokens. The teacher,
on P + F + R tokens per attempt, forms its own micro-batches within the same g attempts.

    peak = weights + adapter state + adapter gradients + optimizer moments
           + student graph + max(teacher pass, student backward)

    weights            = parameters · b
    adapter state      = P_lora · (a + 4)        the parameters and the EMA teacher's float32 copy
    adapter gradients  = P_lora · a              from the first backward on
    optimizer moments  = P_lora · 2a             AdamW's two, made at the first step in the parameters' dtype
                                                 (with a = 4: 20 bytes per LoRA parameter in all)
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

from typing import Any, Callable, Iterable

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
    adapter_dtype_bytes: int = 4  # PEFT casts LoRA weights to float32 on a bf16/fp16 base (autocast_adapter_dtype)
    device: str = "cuda"
    logit_chunk_bytes: int = LOGIT_CHUNK_BYTES


class MemoryEstimate(BaseModel):
    total: int  # bytes at the peak
    step: int  # what a first step adds above what the trainer holds before it (weights, adapter, EMA copy)
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

    lora_parameters, a = model.lora_parameters(step.lora), step.adapter_dtype_bytes
    parts = {
        "weights": model.parameters() * b,
        "adapter_state": lora_parameters * (a + 4),
        "adapter_gradients": lora_parameters * a,
        "optimizer_moments": lora_parameters * 2 * a,
        "student_graph": graph,
        "teacher_pass": teacher,
        "student_backward": backward,
    }
    step_bytes = parts["adapter_gradients"] + parts["optimizer_moments"] + graph + max(teacher, backward)
    return MemoryEstimate(total=parts["weights"] + parts["adapter_state"] + step_bytes, step=step_bytes, parts=parts)


# ----- what fits ---------------------------------------------------------------------------------
def largest_fitting(fits: Callable[[int], bool], low: int, high: int, segment_ends: Iterable[int] = ()) -> int | None:
    """The largest n in [low, high] with fits(n), or None.

    fits must be monotone (true, then false) on each segment [low, e₁], [e₁ + 1, e₂], …, [eₖ + 1, high]
    between the given segment ends, not across them: the step's memory falls where a micro-batch
    takes fewer attempts, so one binary search over the whole range can miss the longest length
    that fits (a line through two measured rows even slopes the wrong way). Segments are tried from
    the top: the first whose start fits holds the answer, found by bisection inside it."""
    if high < low:
        return None
    ends = sorted({e for e in segment_ends if low <= e < high})
    starts = [low, *(e + 1 for e in ends)]
    stops = [*ends, high]
    for start, stop in reversed(list(zip(starts, stops))):
        if not fits(start):
            continue
        while start < stop:  # invariant: fits(start)
            middle = (start + stop + 1) // 2
            if fits(middle):
                start = middle
            else:
                stop = middle - 1
        return start
    return None


def micro_batch_changes(step: LearningShape) -> list[int]:
    """Response lengths after which the micro-batch arrangement changes (fewer attempts per student
    or teacher micro-batch, the shared prefix on or off): within the ranges between them every term
    of the estimate grows with the response length."""
    budget, p, f = step.max_batch_tokens, step.prompt_tokens, step.feedback_tokens
    return sorted({budget // rows - p - extra for rows in range(2, step.attempts + 1) for extra in (0, f)})


def longest_fitting_response(model: ModelShape, step: LearningShape, fit_bytes: float, limit: int,
                             step_scale: float = 1.0) -> int | None:
    """The longest response (≤ limit tokens) whose expected peak fits in fit_bytes, at `step`'s other
    sizes; step_scale multiplies what the step adds (a correction measured rows give), or None."""

    def fits(response_tokens: int) -> bool:
        return _scaled_total(model, step.model_copy(update={"response_tokens": response_tokens}), step_scale) <= fit_bytes

    return largest_fitting(fits, 1, limit, micro_batch_changes(step))


def most_attempts_fitting(model: ModelShape, step: LearningShape, fit_bytes: float, limit: int,
                          step_scale: float = 1.0) -> int | None:
    """The most attempts per step (≤ limit) whose expected peak fits in fit_bytes, or None. The peak
    grows with the attempts only until a micro-batch is full, so the answer is often the limit."""

    def fits(attempts: int) -> bool:
        return _scaled_total(model, step.model_copy(update={"attempts": attempts}), step_scale) <= fit_bytes

    return largest_fitting(fits, 1, limit)


def _scaled_total(model: ModelShape, step: LearningShape, step_scale: float) -> float:
    estimate = estimate_learning_peak(model, step)
    return estimate.total - estimate.step + step_scale * estimate.step


def estimate_concurrent_peak(model: ModelShape, step: LearningShape, learners: int, sampled_rows: int, sampled_tokens: int) -> MemoryEstimate:
    """The peak of R runs on one engine (`ttsd bench --concurrent`): one base model, `learners`
    adapters each with what it keeps between steps (parameters, fp32 EMA copy, gradients, AdamW's
    moments: each run has its own optimizer), and the larger of what one learning step adds on top
    (runs learn one at a time, the sampler asleep) and the sampler's KV cache for `sampled_rows`
    rows of `sampled_tokens` tokens (every run's batch in one call):

        peak = weights + learners · (adapter state + gradients + moments)
               + max(step − gradients − moments, rows · tokens · ℓ · 2k · b)
    """
    one = estimate_learning_peak(model, step)
    kept = one.parts["adapter_gradients"] + one.parts["optimizer_moments"]
    per_learner = one.parts["adapter_state"] + kept
    transient = one.step - kept  # the graph and the larger of teacher pass and backward
    kv_cache = sampled_rows * sampled_tokens * model.layers * 2 * model.kv_dim * step.dtype_bytes
    adapters = learners * per_learner
    parts = {"weights": one.parts["weights"], "adapter_states": adapters, "learning_step": transient, "kv_cache": kv_cache}
    return MemoryEstimate(total=parts["weights"] + adapters + max(transient, kv_cache), step=max(transient, kv_cache), parts=parts)

"""The fast Hugging Face decode path: a static KV cache, one decode step per CUDA graph replay.

Why: transformers' `generate` on a GPU is bound by the CPU, not by memory. Each decode step of an
8B model with a LoRA adapter launches ~3,500 kernels from Python (counted in the eager code: ~60
per layer for the base model, 6 for each of the 7 LoRA-adapted projections), so a step of 16
attempts took ~108 ms on an H100 where reading the weights once takes ~5 ms (148 tokens/s, issue
#10: 5% of the bandwidth limit). Here a
decode step is captured once into a CUDA graph and replayed, so the GPU runs it back to back with
no Python in between, and the step is trimmed before capture:

- **Static KV cache** (transformers' `StaticLayer`): fixed tensors written in place at a position
  held on the GPU, which is what makes a step capturable.
- **Attention windows**: the cache is allocated for prompt + max_tokens, but a step attends only
  to the first W positions, W the next power of two above the current length (one graph per W),
  so a short answer does not read a cache sized for a long one.
- **Grouped decode attention**: with a mask, transformers' SDPA path copies every KV head once per
  query head it serves (`repeat_kv`: 4× the cache for Qwen3-8B, each step). At decode the query
  heads of one KV head become rows of one SDPA call instead: the same attention, no copy.
- **Fused RMSNorm**: Llama/Qwen2/Qwen3's RMSNorm is eight elementwise kernels in transformers
  (upcast, square, mean, add, rsqrt, multiply, downcast, scale); `torch.nn.functional.rms_norm`
  is one fused kernel on CUDA, the same formula rounded once instead of twice.
- **Dense LoRA**: each adapted projection computes `y = W x` then `y += (x Aᵀ)(s B)ᵀ` in the base
  dtype (two small matmuls, the second accumulating in place) instead of peft's six kernels
  (casts to the adapter's float32, two matmuls, the scaling, the add, the cast back). A and s·B
  are copied once per call, so the adapter the trainer just updated is the one sampled.

Sampling is not in the graph: logits → `LogprobRecorder` (temperature, top-p, the log-prob of
the sampling distribution, see `ttsd.engine.hf_sampler`) → softmax → multinomial, exactly the
operations `generate` runs, so with the same seed and the same logits both paths draw the same
tokens. What differs is how the logits are computed (other attention kernels and masks, LoRA in
the base dtype): in float32 the two paths agree to ~1e-6 and draw the same tokens (tested on CPU);
in bfloat16 they differ at the rounding of bf16 logits, as any two kernels do.

`static_decode(..., cuda_graphs=False)` runs the same loop eagerly on any device (the CPU tests
compare it with `generate`; `HFSampler(decode="static")`). When the graph path fails, the sampler
falls back to `generate`, not to this loop: a failure there says the static path is suspect.
"""

from __future__ import annotations

import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

# The attention implementation installed for the duration of a fast decode (see `_decode_attention`).
GROUPED_DECODE_ATTENTION = "ttsd_grouped_decode"
SUPPORTED_ATTENTION = ("sdpa", "eager")
SMALLEST_WINDOW = 256


class FastPathUnavailable(Exception):
    """The static-cache path cannot serve this model or device; the message says why."""


@dataclass
class DecodeStats:
    """Where the time of one `static_decode` call went (seconds; CUDA work synchronised)."""

    prefill_s: float = 0.0
    capture_s: float = 0.0  # warm-up + graph captures (0 without graphs)
    decode_s: float = 0.0  # the decode steps after the prefill, captures excluded
    steps: int = 0  # decode steps after the prefill token
    windows: list[int] = field(default_factory=list)  # attention windows used (one graph each)


def unsupported_reason(model: Any, cuda_graphs: bool) -> str | None:
    """Why the static path cannot run `model` (a transformers causal LM, peft-wrapped or not), or None."""
    import torch

    inner = language_model(model)
    config = inner.config.get_text_config(decoder=True)
    attention = getattr(config, "_attn_implementation", None)
    if attention not in SUPPORTED_ATTENTION:
        return f"attention implementation {attention!r} (the static path supports {', '.join(SUPPORTED_ATTENTION)})"
    layer_types = getattr(config, "layer_types", None) or ["full_attention"]
    if any(kind != "full_attention" for kind in layer_types):
        return f"layer types {sorted(set(layer_types))} (the static path supports full attention only)"
    if getattr(config, "is_encoder_decoder", False):
        return "an encoder-decoder model"
    if cuda_graphs and inner.device.type != "cuda":
        return f"CUDA graphs need a CUDA device (the model is on {inner.device.type})"
    if cuda_graphs and not torch.cuda.is_available():
        return "CUDA is not available"
    return None


def language_model(model: Any) -> Any:
    """The transformers model under a peft wrapper (LoRA layers are injected into it in place)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def attention_windows(prompt_length: int, total_length: int, smallest: int = SMALLEST_WINDOW) -> list[int]:
    """Powers of two times `smallest`, from the first above the prompt, capped at total_length."""
    windows = []
    window = smallest
    while window < total_length:
        if window > prompt_length:
            windows.append(window)
        window *= 2
    windows.append(total_length)
    return windows


def static_decode(
    model: Any,
    input_ids: Any,
    attention_mask: Any,
    *,
    temperature: float,
    top_p: float,
    max_tokens: int,
    eos_ids: list[int],
    pad_id: int,
    cuda_graphs: bool,
    smallest_window: int = SMALLEST_WINDOW,
    generators: list[Any] | None = None,
) -> tuple[Any, Any, DecodeStats]:
    """Sample up to max_tokens tokens for each left-padded row of input_ids.

    Returns (tokens, logprobs, stats): tokens and log-probs as (rows, steps) CPU tensors, with the
    same contents `generate` gives (pad after a row's stop token), the log-prob convention of
    `ttsd.engine.hf_sampler`. Raises FastPathUnavailable when the model cannot take this path.
    `generators`: one seeded generator per row, each row's tokens drawn from its own stream.
    """
    import torch

    from ttsd.engine.logprob_recorder import LogprobRecorder

    reason = unsupported_reason(model, cuda_graphs)
    if reason is not None:
        raise FastPathUnavailable(reason)
    inner = language_model(model)
    device = input_ids.device
    rows, prompt_length = input_ids.shape
    total_length = prompt_length + max_tokens
    windows = attention_windows(prompt_length, total_length, smallest_window)
    stats = DecodeStats()
    recorder = LogprobRecorder(temperature, top_p, generators)
    do_sample = temperature > 0
    eos = torch.tensor(eos_ids, dtype=torch.long, device=device)
    cache = _windowed_cache(inner.config.get_text_config(decoder=True), total_length)

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    with ExitStack() as stack:
        stack.enter_context(torch.no_grad())
        stack.enter_context(_decode_attention(inner))
        stack.enter_context(dense_lora(model))
        stack.enter_context(fused_rms_norms(inner))

        started = time.perf_counter()
        real = attention_mask.bool()
        positions = (attention_mask.long().cumsum(-1) - 1).masked_fill(~real, 1)
        causal = torch.ones(prompt_length, prompt_length, dtype=torch.bool, device=device).tril()
        # Padding queries attend to themselves only: a row with no key at all would make NaNs.
        prefill_mask = (causal & real[:, None, :]) | torch.eye(prompt_length, dtype=torch.bool, device=device)
        _set_window(cache, prompt_length)
        logits = inner(
            input_ids=input_ids, attention_mask=prefill_mask[:, None], position_ids=positions,
            past_key_values=cache, use_cache=True, logits_to_keep=1,
        ).logits[:, -1]
        unfinished = torch.ones(rows, dtype=torch.long, device=device)
        next_tokens = _choose(recorder, None, logits, do_sample, unfinished, pad_id)
        tokens = [next_tokens]
        unfinished = unfinished & ~torch.isin(next_tokens, eos)
        synchronize()
        stats.prefill_s = time.perf_counter() - started

        # The decode step reads only these tensors, updated in place between steps (graph inputs).
        step_ids = next_tokens[:, None].clone()
        step_positions = positions[:, -1:].clone()
        key_mask = torch.zeros(rows, 1, 1, total_length, dtype=torch.bool, device=device)
        key_mask[:, 0, 0, :prompt_length] = real
        step = _Stepper(inner, cache, step_ids, step_positions, key_mask, cuda_graphs)
        started = time.perf_counter()
        for t in range(1, max_tokens):
            if not bool(unfinished.any()):
                break
            step_ids.copy_(next_tokens[:, None])
            step_positions.add_(1)
            key_mask[:, :, :, prompt_length + t - 1] = True  # the slot this step's token is written to
            window = next(w for w in windows if w >= prompt_length + t)
            logits = step(window)
            next_tokens = _choose(recorder, tokens[-1], logits, do_sample, unfinished, pad_id)
            tokens.append(next_tokens)
            unfinished = unfinished & ~torch.isin(next_tokens, eos)
        synchronize()
        stats.capture_s = step.capture_s
        stats.decode_s = time.perf_counter() - started - step.capture_s
        stats.steps = len(tokens) - 1
        stats.windows = list(step.windows_used)
        step.release()
    sampled = torch.stack(tokens, dim=1)
    logprobs = recorder.finish(tokens[-1])
    return sampled.cpu(), logprobs.cpu(), stats


def _choose(recorder: Any, previous: Any, logits: Any, do_sample: bool, unfinished: Any, pad_id: int) -> Any:
    """One token per row from the step's logits, with `generate`'s operations in `generate`'s order."""
    import torch

    # The recorder reads the token sampled at the previous step as input_ids[:, -1].
    scores = recorder(None if previous is None else previous[:, None], logits.float())
    if do_sample:
        chosen = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1).squeeze(1)
    else:
        chosen = torch.argmax(scores, dim=-1)
    return chosen * unfinished + pad_id * (1 - unfinished)


class _Stepper:
    """Runs one decode step for an attention window: eagerly, or by replaying that window's graph
    (captured the first time the window is needed, after one eager warm-up step overall)."""

    def __init__(self, model: Any, cache: Any, ids: Any, positions: Any, key_mask: Any, cuda_graphs: bool) -> None:
        self.model, self.cache = model, cache
        self.ids, self.positions, self.key_mask = ids, positions, key_mask
        self.cuda_graphs = cuda_graphs
        self.graphs: dict[int, tuple[Any, Any]] = {}
        self.windows_used: list[int] = []
        self.capture_s = 0.0
        self.warmed_up = False

    def forward(self, window: int) -> Any:
        _set_window(self.cache, window)
        return self.model(
            input_ids=self.ids, attention_mask=self.key_mask[:, :, :, :window], position_ids=self.positions,
            past_key_values=self.cache, use_cache=True, logits_to_keep=1,
        ).logits[:, -1]

    def __call__(self, window: int) -> Any:
        if window not in self.windows_used:
            self.windows_used.append(window)
        if not self.cuda_graphs:
            return self.forward(window)
        if window not in self.graphs:
            started = time.perf_counter()
            self.graphs[window] = self._capture(window)
            self.capture_s += time.perf_counter() - started
        graph, logits = self.graphs[window]
        graph.replay()
        return logits

    def _capture(self, window: int) -> tuple[Any, Any]:
        import torch

        if not self.warmed_up:
            # cuBLAS and the attention kernels set themselves up on first use, which a capture
            # cannot contain; the warm-up step's cache write is undone (the replay redoes it).
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self.forward(window)
            torch.cuda.current_stream().wait_stream(side)
            for layer in self.cache.layers:
                layer.cumulative_length.sub_(1)
            self.warmed_up = True
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            logits = self.forward(window)
        return graph, logits

    def release(self) -> None:
        self.graphs.clear()


def _windowed_cache(config: Any, max_length: int) -> Any:
    """A transformers `Cache` of static layers whose `update` returns only the first `window` slots."""
    from transformers.cache_utils import Cache, StaticLayer

    class WindowedStaticLayer(StaticLayer):
        window: int | None = None

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            keys, values = super().update(key_states, value_states, *args, **kwargs)
            return keys[:, :, : self.window], values[:, :, : self.window]

    return Cache(layers=[WindowedStaticLayer(max_cache_len=max_length) for _ in range(config.num_hidden_layers)])


def _set_window(cache: Any, window: int) -> None:
    for layer in cache.layers:
        layer.window = window


def grouped_decode_attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, *args: Any, **kwargs: Any) -> tuple[Any, None]:
    """Attention for one query position: the query heads sharing a KV head are the rows of one
    SDPA call (no KV copy). Longer queries (the prefill) go to the model's own implementation."""
    import torch.nn.functional as F

    if query.shape[2] != 1 or attention_mask is None:
        return module._ttsd_prefill_attention(module, query, key, value, attention_mask, *args, **kwargs)
    batch, query_heads, _, head_dim = query.shape
    kv_heads = key.shape[1]
    grouped = query.reshape(batch, kv_heads, query_heads // kv_heads, head_dim)
    out = F.scaled_dot_product_attention(grouped, key, value, attn_mask=attention_mask, scale=kwargs.get("scaling"))
    return out.reshape(batch, query_heads, 1, value.shape[-1]).transpose(1, 2), None


@contextmanager
def _decode_attention(model: Any) -> Iterator[None]:
    """Route the model's attention through `grouped_decode_attention` while decoding."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface

    AttentionInterface.register(GROUPED_DECODE_ATTENTION, grouped_decode_attention)
    config = model.config
    original = config._attn_implementation
    if original == "sdpa":
        prefill = sdpa_attention_forward
    else:
        from importlib import import_module

        prefill = getattr(import_module(type(model).__module__), "eager_attention_forward", None)
        prefill = prefill or ALL_ATTENTION_FUNCTIONS.get(original)
    modules = [m for m in model.modules() if hasattr(m, "num_key_value_groups")]
    for module in modules:
        module._ttsd_prefill_attention = prefill
    config._attn_implementation = GROUPED_DECODE_ATTENTION
    try:
        yield
    finally:
        config._attn_implementation = original
        for module in modules:
            del module._ttsd_prefill_attention


# RMSNorm classes computing weight * x / sqrt(mean(x²) + eps), which is F.rms_norm (Gemma's, with
# 1 + weight, is not).
PLAIN_RMS_NORMS = ("LlamaRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm", "MistralRMSNorm")


@contextmanager
def fused_rms_norms(model: Any) -> Iterator[int]:
    """While active, the model's plain RMSNorm layers run `torch.nn.functional.rms_norm`. Yields
    how many layers changed."""
    changed = [m for m in model.modules() if type(m).__name__ in PLAIN_RMS_NORMS and hasattr(m, "variance_epsilon")]
    for module in changed:
        module.forward = _fused_rms_norm(module)
    try:
        yield len(changed)
    finally:
        for module in changed:
            del module.forward


def _fused_rms_norm(module: Any) -> Any:
    import torch.nn.functional as F

    original = type(module).forward.__get__(module)

    def forward(hidden_states: Any) -> Any:
        if hidden_states.dtype != module.weight.dtype:
            return original(hidden_states)
        return F.rms_norm(hidden_states, module.weight.shape, module.weight, module.variance_epsilon)

    return forward


@contextmanager
def dense_lora(model: Any) -> Iterator[int]:
    """While active, each peft LoRA linear layer with one plain active adapter computes
    `y = base(x); y += (x Aᵀ)(s B)ᵀ` in the base layer's dtype. Yields how many layers changed;
    the others (DoRA, merged, disabled, several adapters) keep peft's own forward."""
    import torch

    try:
        from peft.tuners.lora.layer import Linear as LoraLinear
    except ImportError:
        yield 0
        return
    changed = []
    for module in model.modules():
        if not isinstance(module, LoraLinear) or module.disable_adapters or module.merged:
            continue
        active = [name for name in module.active_adapters if name in module.lora_A]
        if len(active) != 1 or active[0] in getattr(module, "lora_variant", {}):
            continue
        name = active[0]
        base = module.base_layer
        dropout = module.lora_dropout[name]
        if not isinstance(base, torch.nn.Linear) or (module.training and not isinstance(dropout, torch.nn.Identity)):
            continue
        dtype = base.weight.dtype
        shrink = module.lora_A[name].weight.detach().to(dtype).t()  # (in, r)
        expand = (module.lora_B[name].weight.detach() * module.scaling[name]).to(dtype).t().contiguous()  # (r, out)
        module.forward = _dense_forward(base, shrink, expand)
        changed.append(module)
    try:
        yield len(changed)
    finally:
        for module in changed:
            del module.forward


def _dense_forward(base: Any, shrink: Any, expand: Any) -> Any:
    def forward(x: Any, *args: Any, **kwargs: Any) -> Any:
        out = base(x)
        flat = out.view(-1, out.shape[-1])
        flat.addmm_(x.reshape(-1, x.shape[-1]).to(shrink.dtype) @ shrink, expand)
        return out

    return forward

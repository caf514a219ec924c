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

**Kept across calls.** A captured graph reads fixed addresses: the KV cache, the step's input
tensors and the dense-LoRA copies. Those live in a session (`_Session`) kept on the model for a
batch size (`MAX_KEPT_SESSIONS`, least recently used dropped first; a longer call replaces the
session it outgrows), with its graphs, so the next call replays them instead of capturing again
(each capture costs an eager warm-up step, a `gc.collect()` and an `empty_cache()`). The adapter's
current values are copied into the session's LoRA tensors at every call. The memory kept is the
KV cache, rows × capacity × 2·layers·kv_dim·b (`_Session.nbytes`); `release_decode_sessions(model)`
frees it. Every window's first step runs eagerly before its capture (`graph_actions`): the
kernels an attention shape picks set themselves up on first use, which a capture cannot contain.

`static_decode(..., cuda_graphs=False)` runs the same loop eagerly on any device (the CPU tests
compare it with `generate`; `HFSampler(decode="static")`). When the graph path fails, the sampler
falls back to `generate`, not to this loop: a failure there says the static path is suspect.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Generic, Iterator, TypeVar

# The attention implementation installed for the duration of a fast decode (see `_decode_attention`).
GROUPED_DECODE_ATTENTION = "ttsd_grouped_decode"
SUPPORTED_ATTENTION = ("sdpa", "eager")
SMALLEST_WINDOW = 256
MAX_KEPT_SESSIONS = 2  # batch sizes whose cache and graphs a model keeps between calls


class FastPathUnavailable(Exception):
    """The static-cache path cannot serve this model or device; the message says why."""


@dataclass
class DecodeStats:
    """Where the time of one `static_decode` call went (seconds; CUDA work synchronised)."""

    prefill_s: float = 0.0
    capture_s: float = 0.0  # warm-ups + graph captures in this call (0 without graphs, or all kept)
    decode_s: float = 0.0  # the decode steps after the prefill, captures excluded
    steps: int = 0  # decode steps after the prefill token
    windows: list[int] = field(default_factory=list)  # attention windows used (one graph each)
    captured: list[int] = field(default_factory=list)  # windows captured in this call (each after its warm-up)
    kept_session: bool = False  # the cache (and graphs) came from an earlier call


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
    keep: bool | None = None,
    generators: list[Any] | None = None,
) -> tuple[Any, Any, DecodeStats]:
    """Sample up to max_tokens tokens for each left-padded row of input_ids.

    Returns (tokens, logprobs, stats): tokens and log-probs as (rows, steps) CPU tensors, with the
    same contents `generate` gives (pad after a row's stop token), the log-prob convention of
    `ttsd.engine.hf_sampler`. Raises FastPathUnavailable when the model cannot take this path.
    keep: reuse and keep the session (cache, graphs) on the model; default: with CUDA graphs.
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
    keep = cuda_graphs if keep is None else keep
    stats = DecodeStats()
    recorder = LogprobRecorder(temperature, top_p, generators)
    do_sample = temperature > 0
    eos = torch.tensor(eos_ids, dtype=torch.long, device=device)
    session, stats.kept_session = _session_for(inner, model, rows, total_length, smallest_window, keep, device)
    cache = session.cache

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    with ExitStack() as stack:
        # a call that fails (a capture refused, out of memory) leaves nothing kept behind it
        stack.push(lambda kind, error, trace: kept_sessions(inner).discard(session) if kind else None)
        stack.enter_context(torch.no_grad())
        stack.enter_context(_decode_attention(inner))
        stack.enter_context(dense_lora(model, session.lora))
        stack.enter_context(fused_rms_norms(inner))
        session.reset()

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

        # The decode step reads only the session's tensors, updated in place between steps (graph inputs).
        step_ids, step_positions, key_mask = session.ids, session.positions, session.key_mask
        step_positions.copy_(positions[:, -1:])
        key_mask[:, 0, 0, :prompt_length] = real
        step = _Stepper(inner, session, cuda_graphs)
        started = time.perf_counter()
        for t in range(1, max_tokens):
            if not bool(unfinished.any()):
                break
            step_ids.copy_(next_tokens[:, None])
            step_positions.add_(1)
            key_mask[:, :, :, prompt_length + t - 1] = True  # the slot this step's token is written to
            window = next(w for w in session.windows if w >= prompt_length + t)
            logits = step(window)
            next_tokens = _choose(recorder, tokens[-1], logits, do_sample, unfinished, pad_id)
            tokens.append(next_tokens)
            unfinished = unfinished & ~torch.isin(next_tokens, eos)
        synchronize()
        stats.capture_s = step.capture_s
        stats.decode_s = time.perf_counter() - started - step.capture_s
        stats.steps = len(tokens) - 1
        stats.windows = list(step.windows_used)
        stats.captured = list(step.captured)
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


def graph_actions(window: int, captured: Collection[int]) -> list[str]:
    """What a decode step with CUDA graphs does for `window`, in order: a window without a graph is
    first run once eagerly ("warm-up": cuBLAS handles, the attention kernel its shape picks and that
    kernel's plan set themselves up on first use, which a capture cannot contain), then captured,
    then replayed; a window with a graph (from this call or a kept session) is replayed."""
    return ["replay"] if window in captured else ["warm-up", "capture", "replay"]


class _Stepper:
    """Runs one decode step for an attention window: eagerly, or by `graph_actions` on the
    session's graphs (kept across calls when the session is)."""

    def __init__(self, model: Any, session: "_Session", cuda_graphs: bool) -> None:
        self.model, self.session, self.cuda_graphs = model, session, cuda_graphs
        self.windows_used: list[int] = []
        self.captured: list[int] = []  # windows captured by this call
        self.actions: list[tuple[str, int]] = []  # what ran, in order
        self.capture_s = 0.0

    def forward(self, window: int) -> Any:
        session = self.session
        _set_window(session.cache, window)
        return self.model(
            input_ids=session.ids, attention_mask=session.key_mask[:, :, :, :window], position_ids=session.positions,
            past_key_values=session.cache, use_cache=True, logits_to_keep=1,
        ).logits[:, -1]

    def __call__(self, window: int) -> Any:
        if window not in self.windows_used:
            self.windows_used.append(window)
        if not self.cuda_graphs:
            return self.forward(window)
        graphs = self.session.graphs
        for action in graph_actions(window, graphs):
            self.actions.append((action, window))
            if action == "replay":
                graph, logits = graphs[window]
                graph.replay()
                return logits
            started = time.perf_counter()
            if action == "warm-up":
                self.warm_up(window)
            else:
                graphs[window] = self._capture(window)
                self.captured.append(window)
            self.capture_s += time.perf_counter() - started
        raise AssertionError("graph_actions ends with a replay")

    def warm_up(self, window: int) -> None:
        """One eager step at `window` whose cache write is undone (the step that follows redoes it).
        On CUDA on a side stream, as captures want; elsewhere inline (what the CPU tests check)."""
        import torch

        if self.session.cache.layers[0].keys.device.type == "cuda":
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self.forward(window)
            torch.cuda.current_stream().wait_stream(side)
        else:
            self.forward(window)
        for layer in self.session.cache.layers:
            layer.cumulative_length.sub_(1)

    def _capture(self, window: int) -> tuple[Any, Any]:
        import torch

        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            logits = self.forward(window)
        return graph, logits


class _Session:
    """The tensors a decode step reads, for one batch size, a capacity and one adapter layout: the
    KV cache (allocated at the first prefill), the step's inputs, the dense-LoRA copies, and the
    graphs captured over them (by window)."""

    def __init__(self, config: Any, rows: int, capacity: int, smallest_window: int, signature: tuple, device: Any) -> None:
        import torch

        self.rows, self.capacity, self.signature = rows, capacity, signature
        self.windows = attention_windows(0, capacity, smallest_window)
        self.cache = _windowed_cache(config, capacity)
        self.ids = torch.zeros(rows, 1, dtype=torch.long, device=device)
        self.positions = torch.zeros(rows, 1, dtype=torch.long, device=device)
        self.key_mask = torch.zeros(rows, 1, 1, capacity, dtype=torch.bool, device=device)
        self.lora: dict[str, tuple[Any, Any]] = {}
        self.graphs: dict[int, tuple[Any, Any]] = {}

    def serves(self, rows: int, total_length: int, signature: tuple) -> bool:
        return self.rows == rows and self.signature == signature and self.capacity >= total_length

    def reset(self) -> None:
        """Empty the cache for a new call (in place: the graphs keep reading the same tensors).
        Old keys and values stay where they are; the key mask hides them."""
        for layer in self.cache.layers:
            layer.cumulative_length.zero_()
        self.key_mask.zero_()

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for layer in self.cache.layers if layer.is_initialized
                   for t in (layer.keys, layer.values))


Kept = TypeVar("Kept")


class KeptSessions(Generic[Kept]):
    """At most `limit` entries, the least recently used dropped first (bounded memory)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._entries: OrderedDict[int, Kept] = OrderedDict()
        self._next = 0

    def find(self, wanted: Callable[[Kept], bool]) -> Kept | None:
        """The most recently used entry that `wanted` accepts, marked as just used."""
        for key in reversed(self._entries):
            if wanted(self._entries[key]):
                self._entries.move_to_end(key)
                return self._entries[key]
        return None

    def add(self, entry: Kept, replaces: Callable[[Kept], bool] = lambda kept: False) -> list[Kept]:
        """Keep `entry`; returns what was dropped: the entries it replaces, then the least recently used over the limit."""
        dropped = [kept for kept in self._entries.values() if replaces(kept)]
        self._entries = OrderedDict((key, kept) for key, kept in self._entries.items() if not replaces(kept))
        self._entries[self._next] = entry
        self._next += 1
        while len(self._entries) > self.limit:
            dropped.append(self._entries.popitem(last=False)[1])
        return dropped

    def discard(self, entry: Kept) -> None:
        """Drop `entry` if it is kept (by identity)."""
        self._entries = OrderedDict((key, kept) for key, kept in self._entries.items() if kept is not entry)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Kept]:
        return iter(list(self._entries.values()))


SESSIONS_ATTRIBUTE = "_ttsd_decode_sessions"


def kept_sessions(model: Any) -> "KeptSessions[_Session]":
    """The sessions kept on a model (the transformers model under any peft wrapper): they live and
    die with it, so no graph outlives the weights it reads."""
    inner = language_model(model)
    sessions = inner.__dict__.get(SESSIONS_ATTRIBUTE)
    if sessions is None:
        sessions = KeptSessions(MAX_KEPT_SESSIONS)
        inner.__dict__[SESSIONS_ATTRIBUTE] = sessions
    return sessions


def release_decode_sessions(model: Any) -> None:
    """Free the KV caches and graphs the fast path keeps on `model`."""
    kept_sessions(model).clear()


def _session_for(inner: Any, model: Any, rows: int, total_length: int, smallest_window: int, keep: bool,
                 device: Any) -> tuple[_Session, bool]:
    """(session, whether it was kept from an earlier call). A kept session is reused when it has
    the rows, the adapter layout and room for the call; a new one replaces the kept ones it outgrows."""
    signature = _graph_signature(model)
    config = inner.config.get_text_config(decoder=True)
    if not keep:
        return _Session(config, rows, total_length, smallest_window, signature, device), False
    sessions = kept_sessions(inner)
    found = sessions.find(lambda kept: kept.serves(rows, total_length, signature))
    if found is not None:
        return found, True
    capacity = -(-total_length // smallest_window) * smallest_window  # a little room: prompts vary by a few tokens
    session = _Session(config, rows, capacity, smallest_window, signature, device)
    dropped = sessions.add(session, replaces=lambda kept: kept.rows == rows and kept.signature == signature)
    if dropped and device.type == "cuda":
        import torch

        dropped.clear()
        torch.cuda.empty_cache()
    return session, False


def _graph_signature(model: Any) -> tuple:
    """What a captured step depends on beyond the session's tensors: which LoRA layers run dense
    (and their shapes) and which run peft's own forward with which adapters."""
    try:
        from peft.tuners.lora.layer import Linear as LoraLinear
    except ImportError:
        return ()
    signature = []
    for name, module in model.named_modules():
        if isinstance(module, LoraLinear):
            adapter = _dense_adapter(module)
            if adapter is not None:
                signature.append((name, "dense", tuple(module.lora_A[adapter].weight.shape), tuple(module.lora_B[adapter].weight.shape)))
            else:
                signature.append((name, "peft", tuple(module.active_adapters), bool(module.disable_adapters), bool(module.merged)))
    return tuple(signature)


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


def _dense_adapter(module: Any) -> str | None:
    """The adapter a peft LoRA linear layer can run as dense LoRA (one plain active adapter on an
    nn.Linear, no dropout in training), or None."""
    import torch

    if module.disable_adapters or module.merged:
        return None
    active = [name for name in module.active_adapters if name in module.lora_A]
    if len(active) != 1 or active[0] in getattr(module, "lora_variant", {}):
        return None
    dropout = module.lora_dropout[active[0]]
    if not isinstance(module.base_layer, torch.nn.Linear) or (module.training and not isinstance(dropout, torch.nn.Identity)):
        return None
    return active[0]


@contextmanager
def dense_lora(model: Any, kept: dict[str, tuple[Any, Any]] | None = None) -> Iterator[int]:
    """While active, each peft LoRA linear layer with one plain active adapter computes
    `y = base(x); y += (x Aᵀ)(s B)ᵀ` in the base layer's dtype. Yields how many layers changed;
    the others (DoRA, merged, disabled, several adapters) keep peft's own forward.

    kept: the copies of Aᵀ and (s·B)ᵀ by layer name, reused in place when their shapes match (a
    captured graph reads them at their addresses), filled with new ones otherwise."""
    try:
        from peft.tuners.lora.layer import Linear as LoraLinear
    except ImportError:
        yield 0
        return
    changed = []
    for layer_name, module in model.named_modules():
        if not isinstance(module, LoraLinear):
            continue
        name = _dense_adapter(module)
        if name is None:
            continue
        base = module.base_layer
        dtype = base.weight.dtype
        shrink = module.lora_A[name].weight.detach().to(dtype, copy=True).t()  # (in, r), its own storage
        expand = (module.lora_B[name].weight.detach() * module.scaling[name]).to(dtype).t().contiguous()  # (r, out)
        if kept is not None:
            old = kept.get(layer_name)
            if old is not None and old[0].shape == shrink.shape and old[1].shape == expand.shape and old[0].dtype == dtype:
                old[0].copy_(shrink)
                old[1].copy_(expand)
                shrink, expand = old
            else:
                kept[layer_name] = (shrink, expand)
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

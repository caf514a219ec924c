"""The token scorer: log-probabilities of given response tokens under the training model.

For a prompt x and response y (token ids), at every response position t the scorer returns

    log p(y_t | x, y_<t) = log_softmax(z_t / T)[y_t]              (response_logprobs)
    the K largest entries of log_softmax(z_t / T) and their ids  (topk_logprobs, topk_ids)
    log_softmax(z_t / T)[v] for given ids v                      (given_logprobs, e.g. the teacher
                                                                  evaluated at the student's top-K)

with z_t the model's logits, normalized over the full vocabulary (the convention the samplers use,
see `ttsd.engine.hf_sampler`). The student is scored with gradients (`grad=True`), the teacher without.

Trust-region teacher (`trust_region_alpha=α`, no gradients): z_t = lerp(z_ref, z_S, α), the logits
of the reference (the PEFT model with its adapter disabled) and of the current adapter on the same
context (`ttsd.sdpo.teacher`). Because the output head is linear without bias, the scorer lerps the
two backbone passes' final hidden states instead, W lerp(h_ref, h_S, α) = lerp(W h_ref, W h_S, α),
so full-vocabulary logits are still formed one chunk at a time, once.

Memory: nothing of size (sequences × positions × vocabulary) ever exists. The backbone produces
hidden states (B, L, H) per micro-batch of sequences (`max_batch_tokens` padded tokens); only the
response positions are gathered, and `lm_head` + `log_softmax` run over chunks of positions sized so
that one (chunk, V) float32 block is `LOGIT_CHUNK_BYTES` (64 MiB: 110 positions of a 152k
vocabulary, 341 of SmolLM2's 49k), whatever the vocabulary. With gradients each chunk runs under
`torch.utils.checkpoint`, so its logits are recomputed in backward instead of stored; what stays per
position is K + 1 log-probs and K ids. A chunk's transient peak is a few such blocks (logits,
log-probs, and in backward their gradients), see `ttsd.sdpo.memory`.

Shared prefix (`share_prefix=True`): the rows of a micro-batch often begin alike — the student's rows
all share one prompt, the teacher's share the question before each attempt's feedback. The longest
common prefix x_{<S} (less one token, so every scored position stays in the second pass) then runs
once, batch 1, and its keys and values serve every row:

    h(x_{<S} ⊕ s_i) = backbone(s_i | KV(x_{<S}))      the same numbers, S·(B − 1) fewer positions

With gradients the prefix KV stays in the graph, so each row's gradient reaches the prefix pass
(summed over rows), exactly as without sharing. The KV goes in as a read-only cache: the layers
concatenate it with their own keys and values without storing anything, which is what lets
gradient checkpointing re-run a layer in backward and read the same states (transformers drops the
cache under checkpointing unless a layer declares it may keep it, `_can_checkpoint_with_cache`).
The prefix pass is checkpointed too: its cache keeps the first keys and values each layer gives it
and hands the layer back its own input, so the replay in backward computes the same and stores
nothing twice — the prefix then costs S tokens of layer inputs, not S tokens of every layer's
activations (SmolLM2, 4 attempts of 256 tokens after one 256-token prompt: the learning step's
peak above its baseline went from 0.54 to 0.29 GiB, benchmarks/bench_memory.py).
That flag is private to transformers: on a version without it a checkpointed layer would silently
drop the prefix and score every row without its prompt, so the scorer refuses to run instead
(`PrefixCacheUnsupported`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from pydantic import BaseModel, ConfigDict


class TokenScores(BaseModel):
    """Padded per-position results, shape (B, Lmax[, K]); `mask` is True at real response positions."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    response_logprobs: Any  # (B, L) float32
    topk_logprobs: Any | None  # (B, L, K) float32
    topk_ids: Any | None  # (B, L, K) int64
    given_logprobs: Any | None  # (B, L, K') float32, at the given ids
    mask: Any  # (B, L) bool


LOGIT_CHUNK_BYTES = 64 * 2**20  # one (positions, vocabulary) float32 block of logits
MAX_BATCH_TOKENS = 16384  # padded tokens per backbone forward


class PrefixCacheUnsupported(RuntimeError):
    """The installed transformers cannot keep a shared prefix's KV cache under gradient checkpointing."""


def logit_chunk_tokens(vocab_size: int, budget_bytes: int = LOGIT_CHUNK_BYTES) -> int:
    """Positions per lm_head/log_softmax chunk: chunk × V × 4 bytes ≤ budget (at least one)."""
    return max(1, budget_bytes // (4 * vocab_size))


def causal_lm_parts(model: Any) -> tuple[Any, Any]:
    """(backbone, lm_head) of a causal LM, through a PEFT wrapper if there is one (LoRA stays active)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone = getattr(inner, inner.base_model_prefix, None)
    if backbone is None:
        backbone = inner.get_decoder()
    return backbone, inner.get_output_embeddings()


def _chunk_scores(lm_head: Any, hidden: Any, targets: Any, given: Any, temperature: float, top_k: int) -> tuple:
    """Log-probs for one chunk of positions: hidden (N, H), targets (N,), given (N, K') or empty."""
    import torch

    logits = lm_head(hidden).float()
    if temperature != 1.0:  # a (N, V) pass saved at the default temperature
        logits = logits / temperature
    logp = torch.log_softmax(logits, dim=-1)
    # Indexing, not gather: gather's backward keeps its whole (N, V) input. Under checkpointing a
    # recomputed tensor is released only when its node runs in backward, and an output without a
    # gradient (the student's sampled-token log-probs in the logit-level loss) never runs its node:
    # with gather every chunk's (N, V) block stayed alive until the end of backward.
    positions = torch.arange(hidden.shape[0], device=hidden.device)
    target_logp = logp[positions, targets]
    if top_k > 0:
        top_vals, top_ids = logp.topk(top_k, dim=-1)
    else:
        top_vals = logp.new_zeros((hidden.shape[0], 0))
        top_ids = targets.new_zeros((hidden.shape[0], 0))
    given_logp = logp[positions[:, None], given] if given.shape[1] > 0 else logp.new_zeros((hidden.shape[0], 0))
    return target_logp, top_vals, top_ids, given_logp


MIN_SHARED_PREFIX = 16  # tokens; below this a second backbone call costs more than it saves


def shared_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """Length of the longest common prefix of `sequences`, less one token (0 if fewer than 2)."""
    if len(sequences) < 2:
        return 0
    first = sequences[0]
    length = min(len(s) for s in sequences)
    for other in sequences[1:]:
        common = 0
        while common < length and other[common] == first[common]:
            common += 1
        length = common
    return max(0, length - 1)


def _write_once_cache(backbone: Any) -> Any | None:
    """An empty cache for the prefix pass whose layers keep the first keys and values they are given
    and return their input unchanged, so a checkpointed layer can be replayed in backward (same
    inputs, same outputs, nothing stored twice); None when a layer is not a plain growing cache."""
    from transformers.cache_utils import DynamicCache, DynamicLayer

    cache = DynamicCache(config=backbone.config)
    if not cache.layers or any(type(layer) is not DynamicLayer for layer in cache.layers):
        return None
    for layer in cache.layers:

        def update(key_states, value_states, *args, _layer=layer, **kwargs):
            if not _layer.is_initialized:
                _layer.lazy_initialization(key_states, value_states)
                _layer.keys, _layer.values = key_states, value_states
            return key_states, value_states

        layer.update = update
    return cache


def _read_only_cache(prefix: Any, backbone: Any, batch: int) -> Any:
    """A new cache holding the prefix cache's states expanded to `batch` rows, whose layers return
    cat(prefix, new) and store nothing. (The prefix cache itself stays write-once: the prefix
    pass's layers replay against it in backward.)"""
    import torch
    from transformers.cache_utils import DynamicCache

    cache = DynamicCache(config=backbone.config)
    for layer, filled in zip(cache.layers, prefix.layers):
        layer.lazy_initialization(filled.keys, filled.values)
        keys = filled.keys.expand(batch, *filled.keys.shape[1:])
        values = filled.values.expand(batch, *filled.values.shape[1:])
        layer.keys, layer.values = keys, values

        def update(key_states, value_states, *args, _keys=keys, _values=values, **kwargs):
            return torch.cat([_keys, key_states], dim=-2), torch.cat([_values, value_states], dim=-2)

        layer.update = update
    return cache


def check_prefix_cache_under_checkpointing(layer_class: Any = None) -> None:
    """Raise `PrefixCacheUnsupported` unless checkpointed layers of this transformers honour
    `_can_checkpoint_with_cache` (a layer class without it drops the shared prefix's cache)."""
    if layer_class is None:
        from transformers.modeling_layers import GradientCheckpointingLayer as layer_class
    if "_can_checkpoint_with_cache" not in vars(layer_class):
        import transformers

        raise PrefixCacheUnsupported(
            f"transformers {transformers.__version__}: {layer_class.__name__} has no _can_checkpoint_with_cache, so "
            "under gradient checkpointing it would drop the shared prompt's KV cache and score the student "
            "without its prompt. Install a transformers that has it (5.x, as pinned), or train with "
            "--no-gradient-checkpointing."
        )


def _backbone_hidden(backbone: Any, prefix: list[int], input_ids: Any, attention_mask: Any) -> Any:
    """Final hidden states (B, L, H) of prefix ⊕ input_ids[b] at the input_ids positions;
    attention_mask (B, len(prefix) + L) covers the prefix too. See "Shared prefix" above."""
    import torch
    from transformers.modeling_layers import GradientCheckpointingLayer

    if not prefix:
        return backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    layers = [m for m in backbone.modules() if isinstance(m, GradientCheckpointingLayer)]
    if backbone.training and any(getattr(m, "gradient_checkpointing", False) is True for m in layers):
        check_prefix_cache_under_checkpointing()
    prefix_ids = torch.tensor([prefix], device=input_ids.device)
    cache = _write_once_cache(backbone)
    if cache is None:  # not a cache we can share: score the rows whole
        whole = torch.cat([prefix_ids.expand(input_ids.shape[0], -1), input_ids], dim=1)
        return backbone(input_ids=whole, attention_mask=attention_mask, use_cache=False).last_hidden_state[:, len(prefix):]
    try:  # read at forward time: a checkpointed layer keeps the cache for its backward replay
        for layer in layers:
            layer._can_checkpoint_with_cache = True
        backbone(input_ids=prefix_ids, past_key_values=cache, use_cache=True)  # fills the cache, once
        return backbone(
            input_ids=input_ids, attention_mask=attention_mask,
            past_key_values=_read_only_cache(cache, backbone, input_ids.shape[0]),
            use_cache=False,
        ).last_hidden_state
    finally:
        for layer in layers:
            layer.__dict__.pop("_can_checkpoint_with_cache", None)


def micro_batches(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Consecutive groups of sequences whose padded size (count x longest) stays under max_tokens."""
    groups: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for index, length in enumerate(lengths):
        if current and max(longest, length) * (len(current) + 1) > max_tokens:
            groups.append(current)
            current, longest = [], 0
        current.append(index)
        longest = max(longest, length)
    if current:
        groups.append(current)
    return groups


@dataclass
class PackedBatch:
    """One micro-batch laid out for the backbone (see `pack_micro_batch`); CPU tensors.

    prefix: the rows' shared first S tokens (empty: nothing shared), run once.
    input_ids (B, W): row b's tokens after the prefix, right-padded with 0.
    attention_mask (B, S + W): 1 over the prefix and row b's real tokens.
    rows, cols (N,): where in the backbone's (B, W) output each scored token is predicted.
    targets (N,): the scored tokens; given (N, K'): the ids to score each at (K' = 0: none).
    sizes: tokens scored per row (they sum to N).
    """

    prefix: list[int]
    input_ids: Any
    attention_mask: Any
    rows: Any
    cols: Any
    targets: Any
    given: Any
    sizes: list[int]


def score_tokens(
    model: Any,
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    *,
    temperature: float = 1.0,
    top_k: int = 20,
    given_ids: Any = None,
    grad: bool = False,
    chunk_tokens: int | None = None,
    max_batch_tokens: int = MAX_BATCH_TOKENS,
    trust_region_alpha: float | None = None,
    share_prefix: bool = True,
) -> TokenScores:
    """Score response tokens (see the module docstring for the equations).

    model: a transformers causal LM or a PEFT model (scored with its active adapter), or a Policy.
    prompts, responses: ragged lists of token ids, one prompt per response (a response may be empty).
    given_ids: (B, L, K') int tensor, or a list of (len(response_i), K') tensors: ids to score at.
    grad: True keeps the graph (student; the model runs in train mode so gradient checkpointing, if
        enabled, applies); False runs under torch.no_grad (teacher).
    chunk_tokens: positions per lm_head/log_softmax chunk (default: `logit_chunk_tokens(V)`).
    max_batch_tokens: padded tokens per forward.
    trust_region_alpha: score the trust-region teacher lerp(reference, current adapter, α) instead of
        the model as it is (a PEFT model; no gradients).
    share_prefix: run the rows' common prefix once per micro-batch (same results, less work).

    The steps: check the arguments; per micro-batch of sequences, pack the rows (shared prefix,
    padding, the indices of the scored positions), run the backbone, and score the gathered
    positions chunk by chunk; then pad the per-row results back to (B, Lmax[, K]).
    """
    import torch

    from ttsd.engine.policy import Policy

    if isinstance(model, Policy):
        model = model.model
    backbone, lm_head = check_score_arguments(model, prompts, responses, temperature, grad, trust_region_alpha)
    device = lm_head.weight.device
    if chunk_tokens is None:
        chunk_tokens = logit_chunk_tokens(lm_head.weight.shape[0])
    lengths = [len(r) for r in responses]
    given_rows = _given_rows(given_ids, lengths)

    was_training = model.training
    model.train(grad)
    per_row: dict[int, tuple[Any, Any, Any, Any]] = {}  # sequence -> (target, topk vals, topk ids, given)
    try:
        with torch.set_grad_enabled(grad):
            for group in micro_batches([len(prompts[i]) + lengths[i] for i in range(len(prompts))], max_batch_tokens):
                group = [i for i in group if lengths[i] > 0]
                if not group:
                    continue
                shared = _prefix_to_share([prompts[i] for i in group]) if share_prefix else 0
                batch = pack_micro_batch([prompts[i] for i in group], [responses[i] for i in group], shared,
                                         [given_rows[i] for i in group] if given_rows is not None else None)
                hidden = _scored_hidden(model, backbone, batch, device, trust_region_alpha)
                scores = _score_in_chunks(lm_head, hidden, batch.targets.to(device), batch.given.to(device),
                                          temperature, top_k, chunk_tokens, grad)
                per_row.update(zip(group, zip(*(values.split(batch.sizes) for values in scores))))
    finally:
        model.train(was_training)
    given_width = None if given_rows is None else (given_rows[0].shape[-1] if given_rows else 0)
    return pad_back(per_row, lengths, top_k, given_width, device)


def check_score_arguments(
    model: Any, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], temperature: float,
    grad: bool, trust_region_alpha: float | None,
) -> tuple[Any, Any]:
    """Raise ValueError for arguments `score_tokens` cannot score; returns the model's (backbone, lm_head).

    The trust-region teacher needs a PEFT model (its reference is the adapter disabled) and a plain
    bias-free output head without LoRA: it lerps hidden states, which equals lerping logits only when
    the head is linear and the same for both passes."""
    import torch

    if len(prompts) != len(responses):
        raise ValueError("one prompt per response")
    if any(len(p) == 0 for p in prompts):
        raise ValueError("empty prompt: the first response token needs a context")
    if temperature <= 0:
        raise ValueError("temperature must be positive")
    backbone, lm_head = causal_lm_parts(model)
    if trust_region_alpha is not None:
        if grad:
            raise ValueError("the trust-region teacher is scored without gradients")
        if not 0.0 <= trust_region_alpha <= 1.0:
            raise ValueError(f"trust-region alpha must be in [0, 1], got {trust_region_alpha}")
        if not hasattr(model, "disable_adapter"):
            raise ValueError("the trust-region teacher needs a PEFT model (its reference is the adapter disabled)")
        if not isinstance(lm_head, torch.nn.Linear) or hasattr(lm_head, "lora_A") or lm_head.bias is not None:
            raise ValueError(
                "the trust-region teacher lerps hidden states: it needs a plain bias-free output head without LoRA"
            )
    return backbone, lm_head


def _given_rows(given_ids: Any, lengths: list[int]) -> list[Any] | None:
    """Row i's ids to score at, (lengths[i], K') int64 (a padded tensor is cut to each row's length)."""
    import torch

    if given_ids is None:
        return None
    return [torch.as_tensor(given_ids[i])[:length].long() for i, length in enumerate(lengths)]


def _prefix_to_share(prompts: Sequence[Sequence[int]]) -> int:
    """Tokens of the rows' common prefix worth running once: `shared_prefix_length`, or 0 when that is
    under MIN_SHARED_PREFIX (a second backbone call would cost more than it saves)."""
    shared = shared_prefix_length(prompts)
    return shared if shared >= MIN_SHARED_PREFIX else 0


def pack_micro_batch(
    prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], shared: int, given: list[Any] | None = None
) -> PackedBatch:
    """Lay out rows x_b ⊕ y_b (prompt, non-empty response) for one backbone call whose first `shared`
    tokens, common to every row, run once as a prefix (0: none; `shared` < every prompt's length).

    After the prefix, row b is s_b = x_b[shared:] ⊕ y_b, right-padded (so positions follow the prefix
    with no gap); the mask covers the prefix and s_b. Position p predicts token p + 1, so response
    token j of row b, at position P_b + j of x_b ⊕ y_b (P_b = len(x_b)), is predicted at column

        cols = P_b - 1 + j - shared        (never negative: shared ≤ P_b - 1)

    of the backbone's output for the tokens after the prefix; rows, cols list them row by row.
    """
    import torch

    prefix = list(prompts[0][:shared])
    sequences = [list(prompt[shared:]) + list(response) for prompt, response in zip(prompts, responses)]
    width = max(len(s) for s in sequences)
    input_ids = torch.zeros((len(sequences), width), dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), shared + width), dtype=torch.long)
    attention_mask[:, :shared] = 1
    for row, sequence in enumerate(sequences):
        input_ids[row, : len(sequence)] = torch.tensor(sequence)
        attention_mask[row, shared : shared + len(sequence)] = 1
    sizes = [len(r) for r in responses]
    rows = torch.cat([torch.full((size,), row) for row, size in enumerate(sizes)])
    cols = torch.cat([torch.arange(len(r)) + len(p) - shared - 1 for p, r in zip(prompts, responses)])
    targets = torch.cat([torch.as_tensor(list(r), dtype=torch.long) for r in responses])
    if given is not None:
        given_ids = torch.cat(given)
    else:
        given_ids = targets.new_zeros((len(targets), 0))
    return PackedBatch(prefix, input_ids, attention_mask, rows, cols, targets, given_ids, sizes)


def _scored_hidden(model: Any, backbone: Any, batch: PackedBatch, device: Any, trust_region_alpha: float | None) -> Any:
    """Final hidden states (N, H) at the positions that predict the scored tokens.

    Trust-region teacher: lerp(h_ref, h, α), h_ref from the same backbone with the adapter disabled
    (equal to lerping the logits: the head is linear without bias, see the module docstring)."""
    import torch

    inputs = (backbone, batch.prefix, batch.input_ids.to(device), batch.attention_mask.to(device))
    hidden = _backbone_hidden(*inputs)
    if trust_region_alpha is not None:
        with model.disable_adapter():
            reference = _backbone_hidden(*inputs)
        hidden = torch.lerp(reference, hidden, trust_region_alpha)
    return hidden[batch.rows.to(device), batch.cols.to(device)]


def _score_in_chunks(
    lm_head: Any, hidden: Any, targets: Any, given: Any, temperature: float, top_k: int, chunk_tokens: int, grad: bool
) -> list[Any]:
    """`_chunk_scores` over `chunk_tokens` positions at a time, concatenated: [target (N,), top-K
    values (N, K), top-K ids (N, K), given (N, K')]. With gradients each chunk runs under
    `torch.utils.checkpoint`, so its (chunk, V) logits are recomputed in backward, never stored."""
    import torch
    from torch.utils.checkpoint import checkpoint

    pieces: list[list[Any]] = [[], [], [], []]
    for start in range(0, len(targets), chunk_tokens):
        part = slice(start, start + chunk_tokens)
        args = (lm_head, hidden[part], targets[part], given[part], temperature, top_k)
        result = checkpoint(_chunk_scores, *args, use_reentrant=False) if grad else _chunk_scores(*args)
        for bucket, value in zip(pieces, result):
            bucket.append(value)
    return [torch.cat(values) for values in pieces]


def pad_back(
    per_row: dict[int, tuple[Any, Any, Any, Any]], lengths: list[int], top_k: int, given_width: int | None, device: Any
) -> TokenScores:
    """Per-row results (row i: (target, top-K values, top-K ids, given), each lengths[i] long; rows
    with an empty response absent) as `TokenScores` padded with zeros to (B, max(lengths)[, K]).
    `top_k` 0 leaves out the top-K fields and `given_width` None the given log-probs."""
    import torch
    from torch.nn.utils.rnn import pad_sequence

    width = max(lengths, default=0)

    def padded(k: int, trailing: tuple[int, ...], dtype: Any) -> Any:
        rows = [
            per_row[i][k] if i in per_row else torch.zeros((0, *trailing), dtype=dtype, device=device)
            for i in range(len(lengths))
        ]
        if not rows:
            return torch.zeros((0, 0, *trailing), dtype=dtype, device=device)
        result = pad_sequence(rows, batch_first=True)
        if result.shape[1] < width:  # all rows empty
            result = torch.zeros((len(rows), width, *trailing), dtype=dtype, device=device)
        return result

    mask = torch.zeros((len(lengths), width), dtype=torch.bool, device=device)
    for i, length in enumerate(lengths):
        mask[i, :length] = True
    return TokenScores(
        response_logprobs=padded(0, (), torch.float32),
        topk_logprobs=padded(1, (top_k,), torch.float32) if top_k > 0 else None,
        topk_ids=padded(2, (top_k,), torch.long) if top_k > 0 else None,
        given_logprobs=padded(3, (given_width,), torch.float32) if given_width is not None else None,
        mask=mask,
    )

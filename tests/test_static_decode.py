"""The static-cache decode path against transformers `generate`, on CPU (float32, where the two must
draw the same tokens); its pieces (grouped attention, dense LoRA, windows) against their plain
counterparts; a decode step free of host synchronisation (what a CUDA graph capture needs); and the
sampler's fallback to `generate`. On a GPU, tests/test_devices.py adds the CUDA-graph replay."""

from __future__ import annotations

import logging

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from benchmarks.model_configs import build_random_model
from ttsd.engine.chat import chat_prompt_ids
from ttsd.engine.hf_sampler import generate_with_logprobs
from ttsd.engine.policy import DEFAULT_TARGET_MODULES, LoraSettings, Policy
from ttsd.engine.static_decode import (
    MAX_KEPT_SESSIONS,
    KeptSessions,
    _Stepper,
    attention_windows,
    dense_lora,
    fused_rms_norms,
    graph_actions,
    grouped_decode_attention,
    kept_sessions,
    release_decode_sessions,
    static_decode,
    unsupported_reason,
)
from ttsd.engine.types import SamplingSettings


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    torch.manual_seed(0)
    policy = Policy(tiny_model_dir, lora=LoraSettings(rank=4, alpha=8), device="cpu", dtype="float32")
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():  # a trained-looking adapter (peft starts with B = 0)
        for p in policy.trainable_parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=generator))
    return policy


# Small versions of the architectures the GPU benchmarks use: two query heads per KV head, and
# Qwen2's projection biases and Qwen3's per-head norms on the path.
ARCHITECTURES = {
    "llama": None,  # benchmarks/model_configs.py's `tiny`
    "qwen2": dict(model_type="qwen2", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, vocab_size=512, tie_word_embeddings=True),
    "qwen3": dict(model_type="qwen3", hidden_size=64, intermediate_size=128, num_hidden_layers=2, head_dim=16,
                  num_attention_heads=4, num_key_value_heads=2, vocab_size=512, tie_word_embeddings=False),
}


@pytest.fixture(scope="module", params=list(ARCHITECTURES))
def gqa_model(request):
    """A random grouped-query model with a LoRA adapter on every projection."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    fields = ARCHITECTURES[request.param]
    if fields is None:
        base = build_random_model("tiny", dtype=torch.float32, device="cpu", seed=1)
    else:
        fields = dict(fields)
        torch.manual_seed(1)
        base = AutoModelForCausalLM.from_config(AutoConfig.for_model(fields.pop("model_type"), **fields), dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=DEFAULT_TARGET_MODULES))
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.3 * torch.randn(p.shape, generator=generator))
    return model.eval()


def _prompts(tokenizer):
    return [
        chat_prompt_ids(tokenizer, [{"role": "user", "content": "Write a correct Python program."}]),
        chat_prompt_ids(tokenizer, [{"role": "user", "content": "def solve"}]),
    ]


def _left_padded(prompts, pad_id, copies):
    rows = [p for p in prompts for _ in range(copies)]
    width = max(len(p) for p in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for row, prompt in enumerate(rows):
        ids[row, width - len(prompt) :] = torch.tensor(prompt)
        mask[row, width - len(prompt) :] = 1
    return ids, mask


def _both_paths(model, ids, mask, seed, **options):
    torch.manual_seed(seed)
    plain = generate_with_logprobs(model, ids, mask, **options)
    torch.manual_seed(seed)
    tokens, logprobs, stats = static_decode(model, ids, mask, cuda_graphs=False, **options)
    return plain, (tokens, logprobs), stats


@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.7, 0.9), (0.0, 1.0)])
def test_static_path_draws_what_generate_draws(policy, temperature, top_p):
    ids, mask = _left_padded(_prompts(policy.tokenizer), policy.tokenizer.pad_token_id, copies=3)
    options = dict(temperature=temperature, top_p=top_p, max_tokens=40, eos_ids=[policy.tokenizer.eos_token_id],
                   pad_id=policy.tokenizer.pad_token_id)
    torch.manual_seed(1)
    plain = generate_with_logprobs(policy.model, ids, mask, **options)
    torch.manual_seed(1)
    tokens, logprobs, stats = static_decode(policy.model, ids, mask, cuda_graphs=False, smallest_window=8, **options)
    # Windows of 8 · 2^k tokens: the steps cross from one window into the next.
    assert stats.windows[0] > ids.shape[1] and stats.steps == tokens.shape[1] - 1
    assert len(stats.windows) == 2 or tokens.shape[1] < 40
    assert torch.equal(tokens, plain[0])
    torch.testing.assert_close(logprobs, plain[1], atol=1e-5, rtol=0)


def test_grouped_query_model_and_a_run_that_stops_early(gqa_model):
    vocab = gqa_model.config.vocab_size
    generator = torch.Generator().manual_seed(2)
    prompts = [torch.randint(0, vocab, (n,), generator=generator).tolist() for n in (5, 11)]
    ids, mask = _left_padded(prompts, pad_id=0, copies=4)
    # One id in 16 stops a row: every row stops early, and then the loop stops.
    eos = list(range(0, vocab, 16))
    options = dict(temperature=1.0, top_p=1.0, max_tokens=120, eos_ids=eos, pad_id=0)
    plain, fast, stats = _both_paths(gqa_model, ids, mask, seed=4, **options)
    assert torch.equal(fast[0], plain[0])
    torch.testing.assert_close(fast[1], plain[1], atol=1e-5, rtol=0)
    finished = torch.isin(fast[0], torch.tensor(eos)).any(dim=1)
    assert finished.all() and fast[0].shape[1] < 120  # no row ran to the limit, and the loop stopped


def test_grouped_decode_attention_equals_repeated_kv_sdpa():
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    class Attention(torch.nn.Module):
        num_key_value_groups = 4
        is_causal = True
        training = False

    generator = torch.Generator().manual_seed(0)
    query = torch.randn(3, 8, 1, 16, generator=generator)
    key = torch.randn(3, 2, 10, 16, generator=generator)
    value = torch.randn(3, 2, 10, 16, generator=generator)
    mask = torch.rand(3, 1, 1, 10, generator=generator) > 0.3
    mask[..., 0] = True
    expected, _ = sdpa_attention_forward(Attention(), query, key, value, mask, scaling=0.25)
    got, _ = grouped_decode_attention(Attention(), query, key, value, mask, scaling=0.25)
    assert got.shape == expected.shape == (3, 1, 8, 16)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)


def test_dense_lora_equals_peft_and_is_undone(policy):
    from peft.tuners.lora.layer import Linear as LoraLinear

    layer = policy.model.base_model.model.model.layers[0].self_attn.q_proj
    x = torch.randn(2, 3, layer.in_features)
    with torch.no_grad():
        expected = layer(x)
        with dense_lora(policy.model) as changed:
            got = layer(x)
        assert changed == sum(isinstance(m, LoraLinear) for m in policy.model.modules()) == 14
        assert "forward" not in vars(layer)  # peft's own forward is back
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
        with policy.model.disable_adapter(), dense_lora(policy.model) as changed:
            assert changed == 0  # base weights: nothing to add


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_rms_norm_equals_the_models(gqa_model, dtype):
    norms = [m for m in gqa_model.modules() if type(m).__name__.endswith("RMSNorm")]
    generator = torch.Generator().manual_seed(3)
    originals = {id(n): n.weight.detach().clone() for n in norms}
    with torch.no_grad():
        for norm in norms:  # weights away from 1, so a dropped scale would show
            norm.weight.copy_(1 + 0.5 * torch.randn(norm.weight.shape, generator=generator))
        x = 3 * torch.randn(2, 5, norms[0].weight.shape[0], generator=generator)
        for norm in norms:
            norm.to(dtype)
        try:
            expected = [n(x.to(dtype)) for n in norms if n.weight.shape == norms[0].weight.shape]
            with fused_rms_norms(gqa_model) as changed:
                got = [n(x.to(dtype)) for n in norms if n.weight.shape == norms[0].weight.shape]
            assert changed == len(norms) and all("forward" not in vars(n) for n in norms)
        finally:
            for norm in norms:
                norm.to(torch.float32)
                norm.weight.copy_(originals[id(norm)])
    # one rounding instead of two: within one bf16 step (2^-7 relative) of the model's own
    tolerance = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=0.0, rtol=2**-7)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a.float(), b.float(), **tolerance)


class _HostSyncs(TorchDispatchMode):
    """Records the operations that make a CUDA device wait for the host or copy host data in; a
    CUDA graph capture fails on any of them. Seen on CPU through the same dispatcher."""

    SYNCING = {"_local_scalar_dense", "item", "is_nonzero", "nonzero", "masked_select", "lift_fresh", "equal",
               "_unique2", "unique_consecutive", "repeat_interleave"}

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.__name__.split(".")[0]
        if name in self.SYNCING:
            self.seen.append(name)
        return func(*args, **(kwargs or {}))


def test_a_decode_step_never_waits_for_the_host(gqa_model, monkeypatch):
    steps = []
    original = _Stepper.forward

    def observed(self, window):
        with _HostSyncs() as syncs:
            logits = original(self, window)
        steps.append(syncs.seen)
        return logits

    monkeypatch.setattr(_Stepper, "forward", observed)
    ids, mask = _left_padded([[5, 6, 7], [8, 9, 10, 11, 12]], pad_id=0, copies=2)
    static_decode(gqa_model, ids, mask, temperature=1.0, top_p=1.0, max_tokens=6, eos_ids=[1], pad_id=0,
                  cuda_graphs=False, smallest_window=4)
    assert len(steps) >= 4 and all(seen == [] for seen in steps), steps
    with _HostSyncs() as syncs:  # the check itself can fail
        torch.tensor([3]).item()
    assert syncs.seen == ["lift_fresh", "_local_scalar_dense"]


def test_attention_windows():
    assert attention_windows(100, 1124) == [256, 512, 1024, 1124]
    assert attention_windows(300, 400) == [400]
    assert attention_windows(5, 40, smallest=8) == [8, 16, 32, 40]


def test_every_new_window_is_warmed_up_before_its_capture():
    """The order a graph step follows: a window without a graph runs eagerly, is captured, then
    replayed; a window already captured (in this call or a kept session) is only replayed."""
    captured: set[int] = set()
    order = []
    for window in [16, 16, 32, 32, 64, 64]:
        actions = graph_actions(window, captured)
        order += [(action, window) for action in actions]
        captured |= {window for action in actions if action == "capture"}
    assert order == [("warm-up", 16), ("capture", 16), ("replay", 16), ("replay", 16),
                     ("warm-up", 32), ("capture", 32), ("replay", 32), ("replay", 32),
                     ("warm-up", 64), ("capture", 64), ("replay", 64), ("replay", 64)]
    assert graph_actions(32, {16, 32}) == ["replay"]  # kept from an earlier call


def test_a_warm_up_step_at_every_window_leaves_the_decode_unchanged(policy, monkeypatch):
    """What the graph path does before each capture, run eagerly on CPU: the warm-up step's cache
    write is undone, so warming every window changes no token and no log-prob."""
    ids, mask = _left_padded(_prompts(policy.tokenizer), policy.tokenizer.pad_token_id, copies=2)
    options = dict(temperature=1.0, top_p=1.0, max_tokens=80, eos_ids=[], pad_id=policy.tokenizer.pad_token_id,
                   cuda_graphs=False, smallest_window=8)
    torch.manual_seed(2)
    plain = static_decode(policy.model, ids, mask, **options)
    warmed = []
    original = _Stepper.__call__

    def warm_first(self, window):
        if window not in self.windows_used:
            self.warm_up(window)
            warmed.append(window)
        return original(self, window)

    monkeypatch.setattr(_Stepper, "__call__", warm_first)
    torch.manual_seed(2)
    tokens, logprobs, stats = static_decode(policy.model, ids, mask, **options)
    assert len(warmed) >= 3 and warmed == stats.windows
    assert torch.equal(tokens, plain[0])
    assert torch.equal(logprobs, plain[1])


def test_kept_sessions_drop_the_least_recently_used():
    sessions = KeptSessions(limit=2)
    assert sessions.add("a") == [] and sessions.add("b") == []
    assert sessions.find(lambda kept: kept == "a") == "a"  # a is now the most recent
    assert sessions.add("c") == ["b"] and list(sessions) == ["a", "c"]
    assert sessions.add("a2", replaces=lambda kept: kept.startswith("a")) == ["a"] and list(sessions) == ["c", "a2"]
    assert sessions.find(lambda kept: kept == "b") is None
    sessions.discard("c")
    assert list(sessions) == ["a2"]
    sessions.clear()
    assert len(sessions) == 0


def test_a_call_that_fails_keeps_no_session(policy):
    """A decode that raises midway (here the prefill: a token id past the vocabulary) leaves no
    session behind for the next call to reuse."""
    release_decode_sessions(policy.model)
    ids, mask = _left_padded(_prompts(policy.tokenizer), policy.tokenizer.pad_token_id, copies=1)
    ids[0, -1] = policy.model.config.vocab_size + 5
    with pytest.raises(IndexError):
        static_decode(policy.model, ids, mask, temperature=1.0, top_p=1.0, max_tokens=4, eos_ids=[0], pad_id=0,
                      cuda_graphs=False, keep=True)
    assert len(kept_sessions(policy.model)) == 0
    ids[0, -1] = 1
    static_decode(policy.model, ids, mask, temperature=1.0, top_p=1.0, max_tokens=4, eos_ids=[0], pad_id=0,
                  cuda_graphs=False, keep=True)
    assert len(kept_sessions(policy.model)) == 1  # a call that succeeds is kept
    release_decode_sessions(policy.model)


def test_a_kept_session_serves_later_calls_with_the_adapter_of_the_moment(policy):
    """keep=True on CPU, without graphs: the cache and dense-LoRA tensors of one call serve the
    next (tokens equal generate's each time, after the adapter changed in place, for a shorter
    prompt too); another adapter layout gets its own session; at most MAX_KEPT_SESSIONS stay."""
    model = policy.model
    release_decode_sessions(model)
    prompts = _prompts(policy.tokenizer)
    options = dict(temperature=1.0, top_p=1.0, max_tokens=30, eos_ids=[policy.tokenizer.eos_token_id],
                   pad_id=policy.tokenizer.pad_token_id)
    ids, mask = _left_padded(prompts, policy.tokenizer.pad_token_id, copies=2)
    saved = policy.adapter_state()

    def both(ids, mask, seed=6):
        torch.manual_seed(seed)
        plain = generate_with_logprobs(model, ids, mask, **options)
        torch.manual_seed(seed)
        fast = static_decode(model, ids, mask, cuda_graphs=False, keep=True, smallest_window=8, **options)
        assert torch.equal(fast[0], plain[0])
        torch.testing.assert_close(fast[1], plain[1], atol=1e-5, rtol=0)
        return fast

    try:
        first = both(ids, mask)
        assert not first[2].kept_session and len(kept_sessions(model)) == 1
        with torch.no_grad():  # the trainer's update, in place
            for parameter in policy.trainable_parameters():
                parameter.add_(0.3 * torch.randn_like(parameter))
        second = both(ids, mask)
        assert second[2].kept_session and not torch.equal(second[0], first[0])
        short_ids, short_mask = _left_padded(prompts[1:], policy.tokenizer.pad_token_id, copies=4)
        assert both(short_ids, short_mask)[2].kept_session  # same rows, a shorter prompt: the same cache
        with model.disable_adapter():  # base weights: no dense LoRA, another layout
            assert not both(ids, mask)[2].kept_session
        assert len(kept_sessions(model)) == 2
        both(*_left_padded(prompts, policy.tokenizer.pad_token_id, copies=3))  # six rows
        assert len(kept_sessions(model)) == MAX_KEPT_SESSIONS == 2
        with model.disable_adapter():  # used more recently than the adapter's four-row session: still kept
            assert both(ids, mask)[2].kept_session
        assert not both(ids, mask)[2].kept_session  # the six-row session pushed the adapter's out
    finally:
        policy.load_adapter_state(saved)
        release_decode_sessions(model)
    assert len(kept_sessions(model)) == 0


def test_sampler_paths_and_fallbacks(policy, caplog):
    prompts = _prompts(policy.tokenizer)
    plain = policy.sampler(decode="generate")
    static = policy.sampler(decode="static")
    auto = policy.sampler()
    graphs = policy.sampler(decode="cuda-graphs")
    results = {}
    with caplog.at_level(logging.WARNING, logger="ttsd.engine.hf_sampler"):
        for name, sampler in (("generate", plain), ("static", static), ("auto", auto), ("cuda-graphs", graphs)):
            results[name] = sampler.sample(prompts, n=2, settings=SamplingSettings(max_tokens=24, seed=9))
    assert plain.last_decode["path"] == "generate" and static.last_decode["path"] == "static"
    assert auto.last_decode["path"] == "generate" and auto.fallback_reason is None  # CPU: generate by design
    assert graphs.last_decode["path"] == "generate" and "CUDA" in graphs.fallback_reason
    assert [r.getMessage() for r in caplog.records if "fast HF decode path is off" in r.getMessage()] != []
    tokens = {name: [[s.token_ids for s in row] for row in rows] for name, rows in results.items()}
    assert tokens["static"] == tokens["generate"] == tokens["auto"] == tokens["cuda-graphs"]
    with pytest.raises(ValueError, match="decode must be"):
        policy.sampler(decode="fast")


def test_unsupported_models_are_named(policy):
    assert unsupported_reason(policy.model, cuda_graphs=False) is None
    assert "CUDA" in unsupported_reason(policy.model, cuda_graphs=True)
    config = policy.model.get_base_model().config
    config.layer_types = ["sliding_attention", "full_attention"]
    try:
        assert "full attention only" in unsupported_reason(policy.model, cuda_graphs=False)
    finally:
        del config.layer_types
    config._attn_implementation = "flex_attention"
    try:
        assert "flex_attention" in unsupported_reason(policy.model, cuda_graphs=False)
    finally:
        config._attn_implementation = "sdpa"

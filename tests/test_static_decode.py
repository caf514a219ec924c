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
    _Stepper,
    attention_windows,
    dense_lora,
    fused_rms_norms,
    grouped_decode_attention,
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

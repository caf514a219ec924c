"""Real model shapes for speed and memory benchmarks, built with random weights (no downloads).

For speed and memory a random-weight model with a real config costs the same as the real one, so
benchmarks build these instead of fetching weights from the hub (which this environment cannot
reach). The configs are the published `config.json` values of each model, reduced to what changes
cost: layer count, widths, heads, vocabulary and tied embeddings.

    from benchmarks.model_configs import build_random_model, weight_bytes
    model = build_random_model("qwen3-8b", dtype=torch.bfloat16, device="cuda")

`tiny` is the tests' shape (tests/tiny_model.py: head_dim 32, vocab 512), for `--cpu` runs;
`tiny-vocab152k` the same with Qwen's vocabulary (the memory test of a large vocabulary).
"""

from __future__ import annotations

from typing import Any

# model_type + the config fields that set the cost of a forward pass and the memory of the weights.
CONFIGS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, vocab_size=512, tie_word_embeddings=True,
        max_position_embeddings=4096,
    ),
    # the tiny shape with Qwen's vocabulary: the scorer's memory must not grow with attempts × tokens × V
    "tiny-vocab152k": dict(
        model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, vocab_size=151936, tie_word_embeddings=False,
        max_position_embeddings=4096,
    ),
    "smollm2-135m": dict(
        model_type="llama", hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
        num_attention_heads=9, num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True,
        max_position_embeddings=8192, rope_theta=100000.0, rms_norm_eps=1e-5,
    ),
    "qwen2.5-0.5b": dict(
        model_type="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
        num_attention_heads=14, num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True,
        max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6,
    ),
    "qwen2.5-1.5b": dict(
        model_type="qwen2", hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
        num_attention_heads=12, num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True,
        max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6,
    ),
    "qwen2.5-7b": dict(
        model_type="qwen2", hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
        num_attention_heads=28, num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False,
        max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6,
    ),
    "qwen3-8b": dict(
        model_type="qwen3", hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
        num_attention_heads=32, num_key_value_heads=8, head_dim=128, vocab_size=151936,
        tie_word_embeddings=False, max_position_embeddings=40960, rope_theta=1000000.0, rms_norm_eps=1e-6,
    ),
}


def model_config(name: str) -> Any:
    """The transformers config object of `name` (one of CONFIGS)."""
    from transformers import AutoConfig

    if name not in CONFIGS:
        raise KeyError(f"unknown model config {name!r}; known: {', '.join(CONFIGS)}")
    fields = dict(CONFIGS[name])
    return AutoConfig.for_model(fields.pop("model_type"), **fields)


def parameter_count(name: str) -> int:
    """Parameters of `name` counted from its shape (embeddings once when tied)."""
    c = CONFIGS[name]
    hidden, layers, vocab = c["hidden_size"], c["num_hidden_layers"], c["vocab_size"]
    head_dim = c.get("head_dim", hidden // c["num_attention_heads"])
    q = hidden * c["num_attention_heads"] * head_dim
    kv = 2 * hidden * c["num_key_value_heads"] * head_dim
    o = c["num_attention_heads"] * head_dim * hidden
    mlp = 3 * hidden * c["intermediate_size"]
    embeddings = vocab * hidden * (1 if c["tie_word_embeddings"] else 2)
    return layers * (q + kv + o + mlp) + embeddings


def weight_bytes(name: str, bytes_per_parameter: int = 2) -> int:
    """Bytes of the weights in a 2-byte dtype (bf16) unless told otherwise; biases and norms ignored."""
    return parameter_count(name) * bytes_per_parameter


def decode_read_bytes(name: str, batch: int, context_tokens: float, bytes_per_parameter: int = 2,
                      lora_rank: int = 0) -> dict[str, float]:
    """Bytes one decode step of `batch` rows must read from memory, by part:

    - weights: every projection of every layer and the output head once; an untied input embedding
      only the `batch` rows looked up (a tied one is the head, read there once); norms ignored;
    - adapter: a LoRA of `lora_rank` on every projection, in the same dtype (r·(in + out) each);
    - kv_cache: each row's keys and values up to `context_tokens` positions, in every layer.
    """
    c = CONFIGS[name]
    hidden, layers, vocab = c["hidden_size"], c["num_hidden_layers"], c["vocab_size"]
    head_dim = c.get("head_dim", hidden // c["num_attention_heads"])
    q, kv, inter = c["num_attention_heads"] * head_dim, c["num_key_value_heads"] * head_dim, c["intermediate_size"]
    per_layer = hidden * q + 2 * hidden * kv + q * hidden + 3 * hidden * inter
    looked_up = 0 if c["tie_word_embeddings"] else batch * hidden
    lora = lora_rank * ((hidden + q) + 2 * (hidden + kv) + (q + hidden) + 2 * (hidden + inter) + (inter + hidden))
    return {
        "weights": (layers * per_layer + vocab * hidden + looked_up) * bytes_per_parameter,
        "adapter": layers * lora * bytes_per_parameter,
        "kv_cache": batch * context_tokens * layers * 2 * kv * bytes_per_parameter,
    }


def build_random_model(name: str, dtype: Any = None, device: str = "cpu", seed: int = 0) -> Any:
    """A causal LM with `name`'s config and random weights, made directly on `device` in `dtype`."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    config = model_config(name)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype or torch.bfloat16)
    return model.eval()

"""Tokens/s of the Hugging Face sampler's decode paths against the memory-bandwidth limit.

    python benchmarks/bench_hf_sampler.py [--configs qwen2.5-0.5b,qwen2.5-1.5b,qwen3-8b]
        [--batches 16,64] [--paths generate,cuda-graphs] [--prompt-tokens 128]
        [--generate-tokens 32] [--fast-tokens 256] [--device auto] [--dtype auto]
        [--bandwidth-gbs N] [--json OUT.json]

Each config (benchmarks/model_configs.py: real shapes, random weights) gets a LoRA adapter of rank
16 on every projection, as `ttsd solve` trains, with non-zero B so the adapter does work. Each row
samples `batch` attempts of one random prompt, never stopping early, through the functions
HFSampler uses (`generate_with_logprobs`, `static_decode`), after a short warm-up run. Rows run in
the order given (configs, then batches: put the row the target is about first) and the JSON is
rewritten after each, so a run cut short keeps the rows it finished.

The limit: tokens/s ≤ batch × bandwidth ÷ the bytes one decode step reads
(`benchmarks.model_configs.decode_read_bytes`): every layer's weights and the output head once (an
untied input embedding only its looked-up rows), the adapter, and, for the weights+KV limit, each
row's KV cache at the mean context length of the timed steps. Both limits are printed; "of limit"
is against weights+KV, the one a decode step can reach.

The bandwidth is the GPU's datasheet figure when the name is known (H200: 4.8 TB/s), else the
device-to-device copy rate measured here (reads + writes); both are printed and saved. Decode
tokens/s excludes the prefill. With CUDA graphs the path runs twice: a first call on a fresh
session (captures every window, after its warm-up) gives "first call tok/s", decode and captures
together; the next call replays the graphs kept from it and gives "decode tok/s" (what the calls
of one sampling phase get after its first).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.model_configs import CONFIGS, build_random_model, decode_read_bytes, parameter_count  # noqa: E402

# Datasheet memory bandwidth (bytes/s) by a substring of torch.cuda.get_device_name().
DATASHEET_BANDWIDTH = {
    "H200": (4.8e12, "NVIDIA H200 datasheet: 4.8 TB/s HBM3e"),
    "H100 80GB HBM3": (3.35e12, "NVIDIA H100 SXM datasheet: 3.35 TB/s"),
    "H100 NVL": (3.9e12, "NVIDIA H100 NVL datasheet: 3.9 TB/s"),
    "H100 PCIe": (2.0e12, "NVIDIA H100 PCIe datasheet: 2.0 TB/s"),
    "A100-SXM4-80GB": (2.039e12, "NVIDIA A100 80GB SXM datasheet: 2.0 TB/s"),
    "A100 80GB PCIe": (1.935e12, "NVIDIA A100 80GB PCIe datasheet: 1.9 TB/s"),
    "L40S": (8.64e11, "NVIDIA L40S datasheet: 864 GB/s"),
}
LORA_RANK = 16


def copy_bandwidth(device: str) -> float:
    """Bytes/s of a large tensor copy (bytes read + bytes written), best of a few."""
    import torch

    from ttsd.engine.hardware import synchronize as _synchronize

    size = (1 << 30) if device.startswith("cuda") else (1 << 27)
    source = torch.empty(size, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    best = float("inf")
    for _ in range(6):
        _synchronize(device)
        start = time.perf_counter()
        target.copy_(source)
        _synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size / best


def limit_bandwidth(device: str, measured: float, override_gbs: float | None) -> tuple[float, str]:
    import torch

    if override_gbs:
        return override_gbs * 1e9, "--bandwidth-gbs"
    if device.startswith("cuda"):
        name = torch.cuda.get_device_name()
        for key, (value, source) in DATASHEET_BANDWIDTH.items():
            if key in name:
                return value, source
    return measured, "measured copy rate on this machine (no datasheet figure for it)"


def adapted_model(name: str, dtype, device: str):
    """A random-weight model of `name`'s shape with a LoRA adapter on every projection."""
    import torch
    from peft import LoraConfig, get_peft_model

    from ttsd.engine.policy import DEFAULT_TARGET_MODULES

    base = build_random_model(name, dtype=dtype, device=device)
    base.generation_config.eos_token_id = None  # rows run to max_tokens: the benchmark times steps
    model = get_peft_model(base, LoraConfig(r=LORA_RANK, lora_alpha=2 * LORA_RANK, target_modules=DEFAULT_TARGET_MODULES))
    with torch.no_grad():
        for parameter_name, parameter in model.named_parameters():
            if "lora_B" in parameter_name:
                parameter.normal_(0.0, 0.01)
    return model.eval()


def run_path(model, path: str, batch: int, prompt, max_tokens: int, device: str) -> dict:
    """Timed calls of a decode path; the decode rate leaves out the prefill (and captures)."""
    import torch

    from ttsd.engine.hardware import synchronize
    from ttsd.engine.hf_sampler import generate_with_logprobs
    from ttsd.engine.static_decode import release_decode_sessions, static_decode

    ids = torch.tensor([prompt] * batch, device=device)
    mask = torch.ones_like(ids)
    options = dict(temperature=1.0, top_p=1.0, eos_ids=[], pad_id=0)
    if path == "generate":
        def call(tokens):
            return generate_with_logprobs(model, ids, mask, max_tokens=tokens, **options) + (None,)
    else:
        def call(tokens):
            return static_decode(model, ids, mask, max_tokens=tokens, cuda_graphs=path == "cuda-graphs", **options)

    def timed(tokens):
        synchronize(device)
        start = time.perf_counter()
        result = call(tokens)
        synchronize(device)
        return result, time.perf_counter() - start

    call(4)  # warm-up: kernels, allocator, cuBLAS handles
    torch.manual_seed(0)
    prefill_s = None
    if path == "generate":
        prefill_s = timed(1)[1]
    first = None
    if path == "cuda-graphs":  # a first call on a fresh session: every window captured
        release_decode_sessions(model)
        (_, _, first), _ = timed(max_tokens)
    (tokens, logprobs, stats), seconds = timed(max_tokens)
    steps = tokens.shape[1] - 1  # decode steps after the prefill's token
    if stats is not None:
        prefill_s, decode_s, capture_s = stats.prefill_s, stats.decode_s, stats.capture_s
    else:
        decode_s, capture_s = seconds - prefill_s, 0.0
    assert tokens.shape == (batch, max_tokens) and bool(torch.isfinite(logprobs).all())
    row = {
        "tokens": int(tokens.numel()), "steps": steps, "seconds": seconds, "prefill_s": prefill_s, "capture_s": capture_s,
        "decode_s": decode_s, "decode_tokens_per_s": batch * steps / decode_s, "tokens_per_s": tokens.numel() / seconds,
        "first_call_capture_s": 0.0, "first_call_tokens_per_s": batch * steps / (decode_s + capture_s),
    }
    if first is not None:
        row.update(first_call_capture_s=first.capture_s, windows=first.windows, captured=first.captured,
                   first_call_tokens_per_s=batch * first.steps / (first.decode_s + first.capture_s),
                   graphs_kept=stats.kept_session and not stats.captured)
    return row


def with_limits(row: dict, config: str, batch: int, prompt_tokens: int, steps: int, dtype_bytes: int, bandwidth: float) -> dict:
    """The row's weights-only and weights+KV limits (tokens/s) and its fraction of each."""
    read = decode_read_bytes(config, batch, prompt_tokens + (steps + 1) / 2, dtype_bytes, LORA_RANK)
    weights = read["weights"] + read["adapter"]
    row.update(read_bytes_per_step=read, weight_bytes=weights,
               weights_limit_tokens_per_s=batch * bandwidth / weights,
               limit_tokens_per_s=batch * bandwidth / (weights + read["kv_cache"]))
    if "decode_tokens_per_s" in row:
        row["fraction_of_weights_limit"] = row["decode_tokens_per_s"] / row["weights_limit_tokens_per_s"]
        row["fraction_of_limit"] = row["decode_tokens_per_s"] / row["limit_tokens_per_s"]
    return row


def main(argv: list[str] | None = None) -> dict:
    import torch

    from ttsd.engine.hardware import dtype_name, pick_device, pick_dtype
    from ttsd.engine.static_decode import release_decode_sessions

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="qwen3-8b,smollm2-135m,qwen2.5-0.5b,qwen2.5-1.5b",
                        help=f"comma-separated, from {', '.join(CONFIGS)}; rows run in this order")
    parser.add_argument("--batches", default="16,64")
    parser.add_argument("--paths", default=None, help="generate, static, cuda-graphs [default: generate + "
                        "cuda-graphs on CUDA, generate + static elsewhere]")
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--generate-tokens", type=int, default=32, help="tokens per row for transformers generate")
    parser.add_argument("--fast-tokens", type=int, default=256, help="tokens per row for the static-cache paths")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"))
    parser.add_argument("--bandwidth-gbs", type=float, default=None, help="the limit's bandwidth in GB/s [default: datasheet]")
    parser.add_argument("--json", type=Path, default=None, help="rewritten after every row")
    args = parser.parse_args(argv)

    device = pick_device(args.device)
    dtype = pick_dtype(args.dtype, device)
    dtype_bytes = torch.tensor([], dtype=dtype).element_size()
    on_gpu = device.startswith("cuda")
    paths = (args.paths or ("generate,cuda-graphs" if on_gpu else "generate,static")).split(",")
    measured = copy_bandwidth(device)
    bandwidth, source = limit_bandwidth(device, measured, args.bandwidth_gbs)
    result = {
        "device": torch.cuda.get_device_name() if on_gpu else "cpu", "dtype": dtype_name(dtype),
        "torch": torch.__version__, "transformers": __import__("transformers").__version__,
        "bandwidth_limit_gbs": bandwidth / 1e9, "bandwidth_source": source, "measured_copy_gbs": measured / 1e9,
        "prompt_tokens": args.prompt_tokens, "lora_rank": LORA_RANK, "rows": [],
    }
    print(f"device={result['device']} dtype={result['dtype']} torch={result['torch']} "
          f"transformers={result['transformers']} prompt={args.prompt_tokens} LoRA rank {LORA_RANK}")
    print(f"bandwidth for the limit: {bandwidth / 1e9:.0f} GB/s ({source}); measured copy: {measured / 1e9:.0f} GB/s")
    print("| config | params | batch | path | decode tok/s | first call tok/s (with capture) | limit tok/s: weights | "
          "weights+KV | of limit (weights+KV) | prefill s | capture s | tokens |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    generator = torch.Generator().manual_seed(0)
    for name in args.configs.split(","):
        model = adapted_model(name, dtype, device)
        prompt = torch.randint(0, CONFIGS[name]["vocab_size"], (args.prompt_tokens,), generator=generator).tolist()
        for batch in (int(b) for b in args.batches.split(",")):
            for path in paths:
                tokens = args.generate_tokens if path == "generate" else args.fast_tokens
                row = {"config": name, "params": parameter_count(name), "batch": batch, "path": path}
                try:
                    row.update(run_path(model, path, batch, prompt, tokens, device))
                except Exception as error:  # a row that fails (OOM, capture) is reported, the rest still run
                    row["error"] = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
                with_limits(row, name, batch, args.prompt_tokens, row.get("steps", tokens - 1), dtype_bytes, bandwidth)
                result["rows"].append(row)
                print(_table_row(row), flush=True)
                _write(args.json, result)
        release_decode_sessions(model)
        del model
        if on_gpu:
            torch.cuda.empty_cache()
    _write(args.json, result)
    return result


def _write(path: Path | None, report: dict) -> None:
    """Rewrite the JSON (never half-written, even when the run is killed)."""
    from ttsd.runs import write_json_atomic

    if path is not None:
        write_json_atomic(path, report)


def _table_row(row: dict) -> str:
    head = f"| {row['config']} | {row['params'] / 1e9:.2f}B | {row['batch']} | {row['path']} |"
    limits = f"{row['weights_limit_tokens_per_s']:.0f} | {row['limit_tokens_per_s']:.0f} |"
    if "error" in row:
        return f"{head} FAILED: {row['error']} | | {limits} | | | |"
    return (f"{head} {row['decode_tokens_per_s']:.0f} | {row['first_call_tokens_per_s']:.0f} | {limits} "
            f"{100 * row['fraction_of_limit']:.1f}% | {row['prefill_s']:.2f} | {row['first_call_capture_s'] or row['capture_s']:.2f} | "
            f"{row['tokens']} |")


if __name__ == "__main__":
    main()

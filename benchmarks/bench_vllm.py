"""vLLM backend speed: sampling tokens/s and adapter-update latency (LoRA hot-swap), as a table.

    .venv/bin/python benchmarks/bench_vllm.py [--model smollm2-135m-instruct] [--attempts 16]
        [--max-tokens 256] [--rank 16] [--updates 10] [--dtype float32] [--vllm-lora-ops]

Rows:
- engine start (in-process, LoRA enabled);
- sampling: `attempts` samples of up to `max_tokens` tokens for one coding prompt through
  `VLLMSampler.sample` (tokens/s counts the tokens actually generated), with the base weights and
  with an adapter; on CPU through ttsd's dense one-adapter LoRA path, or vLLM's own per-token LoRA
  ops with `--vllm-lora-ops`;
- adapter update, rank `rank` on all linear layers, median of `updates` updates:
  `sync_adapter`, what the SDPO loop calls (in-process engine: tensors handed over in
  memory, no files; target <= 50 ms for rank 16), and the file path it replaces, split into
  writing the adapter (`ttsd.engine.lora.write_adapter` to tmpfs) and loading it into the engine under a new
  lora_int_id (`load_adapter`, which reads the files eagerly);
- the naive path for comparison: PEFT `save_pretrained` to a disk folder + `load_adapter`
  (which copies it to tmpfs first).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

PROMPT = (
    "Write a Python program that reads two integers from standard input and prints their sum. "
    "Answer with the code in a ```python code block."
)


def _perturb(peft_model, step: int) -> None:
    import torch

    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.add_(0.001 * (step + 1))


def bench_vllm(
    model: str = "smollm2-135m-instruct",
    attempts: int = 16,
    max_tokens: int = 256,
    rank: int = 16,
    updates: int = 10,
    dtype: str = "float32",
    sampling: bool = True,
    vllm_lora_ops: bool = False,
) -> list[tuple[str, str, str]]:
    """Run the vLLM measurements; returns (what, value, detail) rows."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ttsd.engine.models import resolve_model
    from ttsd.engine.lora import write_adapter
    from ttsd.engine.types import SamplingSettings
    from ttsd.engine.vllm_sampler import VLLMSampler, adapter_scratch_root

    model_dir = resolve_model(model)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    prompt_ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": PROMPT}], add_generation_prompt=True, tokenize=False
    )
    prompt_ids = tokenizer(prompt_ids, add_special_tokens=False)["input_ids"]
    rows = _Rows()

    start = time.perf_counter()
    sampler = VLLMSampler(model_dir, dtype=dtype, max_model_len=2048, max_lora_rank=rank,
                          one_adapter_fast_path=not vllm_lora_ops)
    lora_ops = "vLLM's LoRA ops" if vllm_lora_ops else "dense one-adapter LoRA path on CPU"
    rows.append(("engine start", f"{time.perf_counter() - start:.1f} s", f"{model}, {dtype}, LoRA on, {lora_ops}"))
    try:
        sampler.sample([prompt_ids], n=2, settings=SamplingSettings(max_tokens=8, seed=0))  # warm-up
        hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        peft_model = get_peft_model(
            hf, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear")
        )
        _perturb(peft_model, 0)
        for label in ("base", "LoRA") if sampling else ():
            if label == "LoRA":
                sampler.sync_adapter(peft_model)
            start = time.perf_counter()
            out = sampler.sample([prompt_ids], n=attempts, settings=SamplingSettings(temperature=1.0, max_tokens=max_tokens, seed=1))
            elapsed = time.perf_counter() - start
            tokens = sum(len(s.token_ids) for s in out[0])
            rows.append(
                (
                    f"sampling, {label} weights",
                    f"{tokens / elapsed:.0f} tok/s",
                    f"{attempts} x <= {max_tokens} tokens: {tokens} tokens in {elapsed:.1f} s",
                )
            )

        size = sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" in n)
        target = adapter_scratch_root(2**28) / "ttsd-bench-adapter"
        in_memory, writes, loads, naive = [], [], [], []
        for step in range(updates):
            _perturb(peft_model, step)
            t0 = time.perf_counter()
            sampler.sync_adapter(peft_model)
            in_memory.append(time.perf_counter() - t0)
        for step in range(updates):
            _perturb(peft_model, step)
            t0 = time.perf_counter()
            write_adapter(peft_model, target / str(step % 2), dtype=sampler._serving_dtype())
            t1 = time.perf_counter()
            sampler.load_adapter(target / str(step % 2))
            t2 = time.perf_counter()
            writes.append(t1 - t0)
            loads.append(t2 - t1)
        with tempfile.TemporaryDirectory() as disk:
            for step in range(max(3, updates // 3)):
                _perturb(peft_model, step)
                t0 = time.perf_counter()
                peft_model.save_pretrained(Path(disk) / str(step))
                sampler.load_adapter(Path(disk) / str(step))
                naive.append(time.perf_counter() - t0)
        shutil.rmtree(target, ignore_errors=True)
        ms = lambda xs: f"{1000 * statistics.median(xs):.1f} ms"  # noqa: E731
        detail = f"rank {rank}, all-linear, {size / 1e6:.2f} M params, median of {updates}"
        path = "tensors in memory" if sampler._in_memory is not None else "engine in another process: files on tmpfs"
        rows.append(("adapter update: sync_adapter", ms(in_memory), f"{detail}; {path}"))
        rows.append(("adapter update via files: write to tmpfs", ms(writes), detail))
        rows.append(("adapter update via files: load into vLLM", ms(loads), "new lora_int_id, eager load"))
        total = [w + l for w, l in zip(writes, loads)]
        rows.append(("adapter update via files: total", ms(total), "write_adapter + load_adapter"))
        rows.append(("adapter update: naive", ms(naive), "PEFT save_pretrained to disk + load_adapter"))
    finally:
        sampler.close()
    return rows


class _Rows(list):
    """Rows that are also printed as they come: a long run shows progress."""

    def append(self, row: tuple[str, str, str]) -> None:
        print(" | ".join(row), flush=True)
        super().append(row)


def print_table(rows: list[tuple[str, str, str]], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in ("measure", "value", "detail"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--attempts", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--updates", type=int, default=10)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--no-sampling", action="store_true", help="only the adapter-update rows")
    parser.add_argument("--vllm-lora-ops", action="store_true",
                        help="sample through vLLM's own per-token LoRA ops instead of ttsd's dense path (CPU)")
    args = parser.parse_args()
    rows = bench_vllm(
        args.model, args.attempts, args.max_tokens, args.rank, args.updates, args.dtype,
        sampling=not args.no_sampling, vllm_lora_ops=args.vllm_lora_ops,
    )
    print_table(rows, "vLLM backend")


if __name__ == "__main__":
    main()

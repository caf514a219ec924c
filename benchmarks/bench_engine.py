"""Engine speed: HF-backend sampling tokens/s and scorer time + peak memory, as a table.

    .venv/bin/python benchmarks/bench_engine.py [--model smollm2-135m-instruct] [--attempts 16]
        [--max-tokens 256] [--score-seqs 16] [--score-len 1024] [--rank 16] [--vllm]

Rows (each measured in a fresh subprocess, so peak memory belongs to that measurement alone):
- hf sampling: `attempts` samples of up to `max_tokens` tokens for one coding prompt through
  `HFSampler` sharing a `Policy` (LoRA rank `rank` active); tokens/s counts the tokens generated.
- scorer, teacher: `score_tokens` without gradients on `score-seqs` sequences of `score-len` tokens
  (1/4 prompt, 3/4 response), top-20 plus 20 given ids per position.
- scorer, student: the same with gradients (gradient checkpointing + per-chunk lm_head
  checkpointing) followed by backward of a loss over all outputs.
Peak memory: the process's max RSS (CPU) or torch.cuda.max_memory_allocated (GPU); the model-loaded
baseline is shown beside it.
`--vllm` adds the vLLM rows from benchmarks/bench_vllm.py (see `vllm_rows`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

PROMPT = (
    "Write a Python program that reads two integers from standard input and prints their sum. "
    "Answer with the code in a ```python code block."
)
Row = tuple[str, str, str]


def _peak_mb(device: str) -> float:
    import resource

    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _policy(model: str, rank: int):
    import torch

    from ttsd.engine.models import resolve_model
    from ttsd.engine.policy import LoraSettings, Policy

    policy = Policy(resolve_model(model), lora=LoraSettings(rank=rank, alpha=2 * rank))
    with torch.no_grad():  # a trained-looking adapter (peft starts with B = 0)
        for p in policy.trainable_parameters():
            p.normal_(0.0, 0.001)
    return policy


def measure_hf_sampling(model: str, attempts: int, max_tokens: int, rank: int) -> dict:
    import torch

    from ttsd.engine.chat import chat_prompt_ids
    from ttsd.engine.types import SamplingSettings

    policy = _policy(model, rank)
    prompt = chat_prompt_ids(policy.tokenizer, [{"role": "user", "content": PROMPT}])
    sampler = policy.sampler(max_batch_size=attempts)
    sampler.sample([prompt], n=2, settings=SamplingSettings(max_tokens=8, seed=0))  # warm-up (allocations, kernels)
    baseline = _peak_mb(policy.device)
    if policy.device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    samples = sampler.sample([prompt], n=attempts, settings=SamplingSettings(temperature=1.0, max_tokens=max_tokens, seed=0))[0]
    if policy.device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    tokens = sum(len(s.token_ids) for s in samples)
    return {
        "seconds": seconds, "tokens": tokens, "device": policy.device, "baseline_mb": baseline,
        "peak_mb": _peak_mb(policy.device), "stopped": sum(s.finish_reason == "stop" for s in samples),
    }


def measure_scorer(model: str, seqs: int, length: int, rank: int, grad: bool) -> dict:
    import torch

    from ttsd.engine.scorer import score_tokens

    policy = _policy(model, rank)
    vocab = policy.model.config.vocab_size
    generator = torch.Generator().manual_seed(0)
    prompt_len = length // 4
    prompts = [torch.randint(0, vocab, (prompt_len,), generator=generator).tolist() for _ in range(seqs)]
    responses = [torch.randint(0, vocab, (length - prompt_len,), generator=generator).tolist() for _ in range(seqs)]
    given = torch.randint(0, vocab, (seqs, length - prompt_len, 20), generator=generator)
    score_tokens(policy, prompts[:1], [r[:8] for r in responses[:1]], top_k=20)  # warm-up
    if policy.device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    baseline = _peak_mb(policy.device)
    start = time.perf_counter()
    scores = score_tokens(policy, prompts, responses, top_k=20, given_ids=given, grad=grad)
    forward = time.perf_counter() - start
    if grad:
        mask = scores.mask
        loss = (scores.response_logprobs * mask).sum() + (scores.topk_logprobs.exp() * mask[..., None]).sum()
        loss.backward()
    if policy.device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds, "forward_seconds": forward, "tokens": seqs * (length - prompt_len),
        "device": policy.device, "baseline_mb": baseline, "peak_mb": _peak_mb(policy.device),
    }


def _in_subprocess(function: str, **kwargs) -> dict:
    """Run one measurement in a fresh interpreter: its peak memory is its own."""
    code = (
        "import json, sys; sys.path.insert(0, {root!r}); from benchmarks import bench_engine as b; "
        "print('@@' + json.dumps(b.{function}(**json.loads(sys.argv[1]))))"
    ).format(root=str(Path(__file__).resolve().parent.parent), function=function)
    done = subprocess.run([sys.executable, "-c", code, json.dumps(kwargs)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{function} failed:\n{done.stderr[-3000:]}")
    line = next(line for line in done.stdout.splitlines() if line.startswith("@@"))
    return json.loads(line[2:])


def hf_rows(args: argparse.Namespace) -> list[Row]:
    sampling = _in_subprocess(
        "measure_hf_sampling", model=args.model, attempts=args.attempts, max_tokens=args.max_tokens, rank=args.rank
    )
    rows: list[Row] = [(
        f"hf sampling, {args.attempts} x <={args.max_tokens} tokens ({sampling['device']})",
        f"{sampling['tokens'] / sampling['seconds']:.1f} tokens/s",
        f"{sampling['tokens']} tokens in {sampling['seconds']:.1f} s; {sampling['stopped']} stopped early; "
        f"LoRA r={args.rank}; peak {sampling['peak_mb']:.0f} MB",
    )]
    for grad, label in ((False, "teacher (no grad)"), (True, "student (grad + backward)")):
        scorer = _in_subprocess(
            "measure_scorer", model=args.model, seqs=args.score_seqs, length=args.score_len, rank=args.rank, grad=grad
        )
        rows.append((
            f"scorer {label}, {args.score_seqs} x {args.score_len} tokens ({scorer['device']})",
            f"{scorer['seconds']:.1f} s",
            f"{scorer['tokens'] / scorer['seconds']:.0f} response tokens/s (forward {scorer['forward_seconds']:.1f} s); "
            f"peak {scorer['peak_mb']:.0f} MB (model loaded: {scorer['baseline_mb']:.0f} MB)",
        ))
    return rows


def vllm_rows(args: argparse.Namespace) -> list[Row]:
    """The vLLM backend's rows (tokens/s, adapter-update latency), from benchmarks/bench_vllm.py."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return [("vllm", "n/a", "vLLM is not installed")]
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from benchmarks.bench_vllm import bench_vllm

    return bench_vllm(model=args.model, attempts=args.attempts, max_tokens=args.max_tokens, rank=args.rank)


def print_table(rows: list[Row], title: str) -> None:
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
    parser.add_argument("--model", default="smollm2-135m-instruct", help="alias, hub id or model folder")
    parser.add_argument("--attempts", type=int, default=16, help="samples drawn at once")
    parser.add_argument("--max-tokens", type=int, default=256, help="max new tokens per sample")
    parser.add_argument("--score-seqs", type=int, default=16, help="sequences scored at once")
    parser.add_argument("--score-len", type=int, default=1024, help="tokens per scored sequence")
    parser.add_argument("--rank", type=int, default=16, help="LoRA rank")
    parser.add_argument("--vllm", action="store_true", help="add the vLLM rows (bench_vllm.py)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rows = hf_rows(args)
    if args.vllm:
        rows += vllm_rows(args)
    print_table(rows, f"engine ({args.model}, {os.cpu_count()} CPUs visible)")


if __name__ == "__main__":
    main()

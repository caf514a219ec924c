"""Peak memory of one SDPO learning step, measured against `ttsd.sdpo.memory.estimate_learning_peak`.

    python benchmarks/bench_memory.py --model-config NAME --attempts 16 --response-tokens 4096,8192
        --prompt-tokens 1024 --device cuda|cpu --dtype bfloat16
        [--gradient-checkpointing/--no-gradient-checkpointing] [--fit-gb 80] [--json OUT.json]

NAME is a shape of benchmarks/model_configs.py (random weights, real sizes). For each response length
the script runs ONE real learning step — `ttsd.sdpo.learn.learn_from_batch`, what `Sdpo.run_step`
runs: `--attempts` responses of exactly that many tokens, the student prompt of `--prompt-tokens`,
the teacher context = that prompt + `--feedback-tokens`, the EMA teacher, AdamW, the default
LoRA (rank 16, all linear layers) and loss settings — and prints

    response tokens | measured peak | expected peak | the step above the baseline: measured, expected, ratio

The ratio compares what the step adds above the memory held before it (the baseline), since on a
CPU the baseline also holds the Python and torch runtime, which the estimator does not model; the
absolute peaks are there too.

Measuring:
- cuda: the model is built once; per row `torch.cuda.max_memory_allocated()` after
  `reset_peak_memory_stats()` (what PyTorch's allocator handed out; the reserved peak is in the JSON).
  An out-of-memory error becomes a row ("OOM") and longer lengths are not tried.
- cpu: every row in a fresh child process (spawned), so rows share nothing. The child runs with
  MALLOC_MMAP_THRESHOLD_=65536: every block over 64 KiB is its own mapping, returned to the OS when
  torch frees it, so RSS follows what torch holds (with glibc's default, freed blocks of up to
  32 MiB stay in the heap and the peak RSS came out 2-4x higher). Before the step the child
  returns freed heap to the OS (`malloc_trim`) and resets the kernel's peak-RSS counter
  (`/proc/self/clear_refs` ← 5); after it, the peak is VmHWM from /proc/self/status. The baseline
  is the RSS just before the step (model, adapter, teacher, optimizer, Python and torch).
  On cuda the baseline is `memory_allocated()` before the step.
  A child killed by the kernel (out of memory) becomes a row ("killed").
- expected: the estimator's total at these shapes (its docstring has the formula).

`--fit-gb G` prints the longest response that fits in G GiB, extrapolated linearly from the measured
rows (the step's memory is affine in the response length once a micro-batch holds one attempt; the
fit uses the two longest measured rows that fit, or the estimator's slope if only one did).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from anywhere: `benchmarks` and `ttsd` import from here
    sys.path.insert(0, str(REPO))

GIB = 2**30


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-config", required=True, help="a shape of benchmarks/model_configs.py")
    parser.add_argument("--attempts", type=int, default=16)
    parser.add_argument("--response-tokens", default="4096,8192", help="comma-separated response lengths")
    parser.add_argument("--prompt-tokens", type=int, default=1024)
    parser.add_argument("--feedback-tokens", type=int, default=256, help="teacher context = prompt + this many tokens")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32", "float16"))
    parser.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--max-batch-tokens", type=int, default=None, help="padded tokens per micro-batch (default: the product's)")
    parser.add_argument("--fit-gb", type=float, default=None, help="report the longest response that fits in this many GiB")
    parser.add_argument("--json", type=Path, default=None, help="write the rows and settings here")
    return parser.parse_args(argv)


def step_inputs(vocab: int, attempts: int, prompt_tokens: int, feedback_tokens: int, response_tokens: int):
    """Random token ids of the batch's shape: one student prompt, one teacher context per attempt,
    and sampler log-probs (so the stale-weights gap runs too, on the trainer's device)."""
    import torch

    from ttsd.sdpo.learn import LearningBatch

    generator = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, vocab, (prompt_tokens,), generator=generator).tolist()
    contexts = [prompt + torch.randint(0, vocab, (feedback_tokens,), generator=generator).tolist() for _ in range(attempts)]
    responses = [torch.randint(0, vocab, (response_tokens,), generator=generator).tolist() for _ in range(attempts)]
    # what a sampler reports (as Python floats): the step compares them with the trainer's on its device
    sampler_logprobs = [[-1.0] * response_tokens for _ in range(attempts)]
    return LearningBatch(student_prompts=[prompt] * attempts, teacher_contexts=contexts, responses=responses,
                         sampler_logprobs=sampler_logprobs)


def trainer(args: argparse.Namespace):
    """(policy, teacher, optimizer, settings) exactly as `Sdpo.setup` makes them, on a random model."""
    import torch

    from benchmarks.model_configs import build_random_model
    from ttsd.config import SolveConfig
    from ttsd.engine.policy import Policy
    from ttsd.sdpo.learn import LearnSettings
    from ttsd.sdpo.teacher import make_teacher

    config = SolveConfig()
    model = build_random_model(args.model_config, dtype=getattr(torch, args.dtype), device=args.device)
    policy = Policy.from_model(model, lora=config.lora_settings(), gradient_checkpointing=args.gradient_checkpointing)
    teacher = make_teacher(config.teacher, policy, config.ema_rate, config.trust_region_alpha)
    optimizer = torch.optim.AdamW(policy.trainable_parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    overrides = {} if args.max_batch_tokens is None else {"max_batch_tokens": args.max_batch_tokens}
    return policy, teacher, optimizer, LearnSettings.from_config(config, **overrides)


def expected(args: argparse.Namespace, response_tokens: int):
    import torch

    from benchmarks.model_configs import model_config
    from ttsd.config import SolveConfig
    from ttsd.sdpo.learn import LearnSettings
    from ttsd.sdpo.memory import LearningShape, ModelShape, estimate_learning_peak

    config = SolveConfig()
    settings = LearnSettings.from_config(config, **({} if args.max_batch_tokens is None else {"max_batch_tokens": args.max_batch_tokens}))
    shape = LearningShape(
        attempts=args.attempts, prompt_tokens=args.prompt_tokens, feedback_tokens=args.feedback_tokens,
        response_tokens=response_tokens, top_k=settings.top_k, max_batch_tokens=settings.max_batch_tokens,
        lora=config.lora_settings(), gradient_checkpointing=args.gradient_checkpointing,
        dtype_bytes=torch.empty((), dtype=getattr(torch, args.dtype)).element_size(), device=args.device,
    )
    return estimate_learning_peak(ModelShape.from_config(model_config(args.model_config)), shape)


# ----- CPU: one child process per row ------------------------------------------------------------
def _proc_status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak_rss() -> None:
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # freed heap goes back to the OS: the step cannot hide in it
    except OSError:
        pass
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux >= 4.0)


def cpu_row(args: argparse.Namespace, response_tokens: int) -> dict:
    """Runs in a fresh child: one learning step, its peak RSS and the RSS before it (bytes)."""
    import torch

    from ttsd.sdpo.learn import learn_from_batch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    policy, teacher, optimizer, settings = trainer(args)
    batch = step_inputs(policy.model.config.vocab_size, args.attempts, args.prompt_tokens, args.feedback_tokens, response_tokens)
    _reset_peak_rss()
    baseline = _proc_status_kib("VmRSS") * 1024
    result = learn_from_batch(policy, teacher, optimizer, batch, settings)
    peak = _proc_status_kib("VmHWM") * 1024
    return {"peak_bytes": peak, "baseline_bytes": baseline, "seconds": result.time_score_s + result.time_train_s}


def measure_cpu(args: argparse.Namespace, response_tokens: int) -> dict:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    # glibc otherwise keeps freed blocks up to 32 MiB in its heap, so RSS would track the largest
    # heap ever needed (+2-4x measured here), not what torch holds; read by the child at its start.
    os.environ["MALLOC_MMAP_THRESHOLD_"] = "65536"
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        try:
            return pool.submit(cpu_row, args, response_tokens).result()
        except BrokenProcessPool:
            return {"error": "killed"}


# ----- CUDA: one process, peak statistics per row ------------------------------------------------
def measure_cuda(args: argparse.Namespace, lengths: list[int]) -> list[dict]:
    import gc

    import torch

    from ttsd.sdpo.learn import learn_from_batch

    policy, teacher, optimizer, settings = trainer(args)
    rows: list[dict] = []
    for response_tokens in lengths:
        if rows and "error" in rows[-1]:
            rows.append({"error": "skipped (a shorter response did not fit)"})
            continue
        batch = step_inputs(policy.model.config.vocab_size, args.attempts, args.prompt_tokens, args.feedback_tokens, response_tokens)
        gc.collect()
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
        try:
            result = learn_from_batch(policy, teacher, optimizer, batch, settings)
            torch.cuda.synchronize()
            rows.append({
                "peak_bytes": torch.cuda.max_memory_allocated(), "baseline_bytes": baseline,
                "reserved_peak_bytes": torch.cuda.max_memory_reserved(),
                "seconds": result.time_score_s + result.time_train_s,
            })
        except torch.OutOfMemoryError:
            rows.append({"error": "OOM", "reserved_peak_bytes": torch.cuda.max_memory_reserved()})
        finally:
            optimizer.zero_grad(set_to_none=True)
    return rows


def longest_fitting(lengths: list[int], rows: list[dict], slope_bytes_per_token: float, fit_bytes: float) -> int | None:
    """Longest response length whose peak stays ≤ fit_bytes, on the line through the two longest
    measured rows (or through the longest with the estimator's slope); None without a measured row."""
    measured = [(n, row["peak_bytes"]) for n, row in zip(lengths, rows) if "peak_bytes" in row]
    if not measured:
        return None
    if len(measured) >= 2:
        (n0, p0), (n1, p1) = measured[-2], measured[-1]
        slope = (p1 - p0) / (n1 - n0) if n1 != n0 else slope_bytes_per_token
    else:
        slope = slope_bytes_per_token
    n1, p1 = measured[-1]
    if slope <= 0:
        return None
    return int(n1 + (fit_bytes - p1) / slope)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    lengths = [int(part) for part in args.response_tokens.split(",") if part.strip()]
    if args.device == "cuda":
        rows = measure_cuda(args, lengths)
    else:
        rows = [measure_cpu(args, n) for n in lengths]
    estimates = [expected(args, n) for n in lengths]
    print(f"model={args.model_config} device={args.device} dtype={args.dtype} attempts={args.attempts} "
          f"prompt={args.prompt_tokens} feedback={args.feedback_tokens} "
          f"gradient_checkpointing={args.gradient_checkpointing}")
    print("| response tokens | measured peak GiB | expected peak GiB | step above baseline GiB: measured | expected | measured / expected |")
    print("|---|---|---|---|---|---|")
    for n, row, estimate in zip(lengths, rows, estimates):
        row["response_tokens"] = n
        row["expected_bytes"] = estimate.total
        row["expected_step_bytes"] = estimate.step
        row["expected_parts"] = estimate.parts
        if "peak_bytes" not in row:
            print(f"| {n} | {row['error']} | {estimate.total / GIB:.3f} | - | {estimate.step / GIB:.3f} | - |")
            continue
        step = row["peak_bytes"] - row["baseline_bytes"]
        row["ratio"] = step / estimate.step
        print(f"| {n} | {row['peak_bytes'] / GIB:.3f} | {estimate.total / GIB:.3f} | {step / GIB:.3f} | "
              f"{estimate.step / GIB:.3f} | {row['ratio']:.2f} |")
    report = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "rows": rows}
    if args.fit_gb is not None:
        slope = (estimates[-1].total - estimates[0].total) / (lengths[-1] - lengths[0]) if len(lengths) > 1 else \
            expected(args, lengths[0] + 1024).total / 1024 - estimates[0].total / 1024
        longest = longest_fitting(lengths, rows, slope, args.fit_gb * GIB)
        report["longest_fitting_response_tokens"] = longest
        print(f"longest response that fits in {args.fit_gb:g} GiB (extrapolated linearly from the measured rows): "
              f"{'unknown (no row fit)' if longest is None else longest} tokens")
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()

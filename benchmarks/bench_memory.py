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
- cuda: the model is built once; per row a fresh AdamW (its moments are made in the step, as in
  a first step, so every row starts from the same baseline), `torch.cuda.max_memory_allocated()`
  after `reset_peak_memory_stats()` (what PyTorch's allocator handed out; the reserved peak is in
  the JSON). An out-of-memory error becomes a row ("OOM") and lengths at least as long are not tried.
- cpu: every row in a fresh child process (spawned), so rows share nothing. The child runs with
  MALLOC_MMAP_THRESHOLD_=65536: every block over 64 KiB is its own mapping, returned to the OS when
  torch frees it, so RSS follows what torch holds (with glibc's default, freed blocks of up to
  32 MiB stay in the heap and the peak RSS came out 2-4x higher). Before the step the child
  returns freed heap to the OS (`malloc_trim`) and resets the kernel's peak-RSS counter
  (`/proc/self/clear_refs` ← 5); after it, the peak is VmHWM from /proc/self/status. The baseline
  is the RSS just before the step (model, adapter, teacher, Python and torch).
  On cuda the baseline is `memory_allocated()` before the step.
  A child killed by the kernel (out of memory) becomes a row ("killed").
- expected: the estimator's total at these shapes (its docstring has the formula).

Rows run in the order given (put the length the question is about first) and the JSON is rewritten
after each, so a run cut short keeps the rows it finished.

`--fit-gb G` searches the estimate itself (`ttsd.sdpo.memory.longest_fitting_response`, exact
although the peak falls where a micro-batch takes fewer attempts) for the longest response that
fits in G GiB with `--attempts` attempts, and the most attempts per step that fit at each measured
length; then again with what the step adds scaled by the largest measured / expected ratio of the
rows (the estimate validated, and corrected where it was low). Lengths stop at the model's context.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Iterator

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
def measure_cuda(args: argparse.Namespace, lengths: list[int]) -> Iterator[dict]:
    """One row per length, in order (yielded as each finishes)."""
    import gc

    import torch

    from ttsd.config import SolveConfig
    from ttsd.sdpo.learn import learn_from_batch

    policy, teacher, optimizer, settings = trainer(args)
    config = SolveConfig()
    too_long: int | None = None  # the shortest length that did not fit
    for response_tokens in lengths:
        if too_long is not None and response_tokens >= too_long:
            yield {"error": f"skipped ({too_long} tokens did not fit)"}
            continue
        batch = step_inputs(policy.model.config.vocab_size, args.attempts, args.prompt_tokens, args.feedback_tokens, response_tokens)
        del optimizer  # a fresh optimizer per row: each row is a first step, from the same baseline
        gc.collect()
        optimizer = torch.optim.AdamW(policy.trainable_parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
        try:
            result = learn_from_batch(policy, teacher, optimizer, batch, settings)
            torch.cuda.synchronize()
            yield {
                "peak_bytes": torch.cuda.max_memory_allocated(), "baseline_bytes": baseline,
                "reserved_peak_bytes": torch.cuda.max_memory_reserved(),
                "seconds": result.time_score_s + result.time_train_s,
            }
        except torch.OutOfMemoryError:
            too_long = min(response_tokens, too_long or response_tokens)
            yield {"error": "OOM", "reserved_peak_bytes": torch.cuda.max_memory_reserved()}
        finally:
            optimizer.zero_grad(set_to_none=True)


def learning_shape(args: argparse.Namespace, response_tokens: int, attempts: int | None = None):
    """The estimator's view of one row: the model's shape and the step's sizes and settings."""
    import torch

    from benchmarks.model_configs import model_config
    from ttsd.config import SolveConfig
    from ttsd.sdpo.learn import LearnSettings
    from ttsd.sdpo.memory import LearningShape, ModelShape

    config = SolveConfig()
    settings = LearnSettings.from_config(config, **({} if args.max_batch_tokens is None else {"max_batch_tokens": args.max_batch_tokens}))
    shape = LearningShape(
        attempts=attempts or args.attempts, prompt_tokens=args.prompt_tokens, feedback_tokens=args.feedback_tokens,
        response_tokens=response_tokens, top_k=settings.top_k, max_batch_tokens=settings.max_batch_tokens,
        lora=config.lora_settings(), gradient_checkpointing=args.gradient_checkpointing,
        dtype_bytes=torch.empty((), dtype=getattr(torch, args.dtype)).element_size(), device=args.device,
    )
    return ModelShape.from_config(model_config(args.model_config)), shape


def expected(args: argparse.Namespace, response_tokens: int):
    from ttsd.sdpo.memory import estimate_learning_peak

    return estimate_learning_peak(*learning_shape(args, response_tokens))


ATTEMPTS_LIMIT = 1024  # the most attempts per step the search tries


def what_fits(args: argparse.Namespace, rows: list[dict]) -> dict:
    """The estimate's longest response and most attempts per step in --fit-gb GiB, then the same with
    the step scaled by the largest measured / expected ratio of the rows."""
    from benchmarks.model_configs import model_config
    from ttsd.sdpo.memory import longest_fitting_response, most_attempts_fitting

    fit = args.fit_gb * GIB
    context = getattr(model_config(args.model_config), "max_position_embeddings", None) or 1 << 17
    limit = max(1, context - args.prompt_tokens - args.feedback_tokens)
    ratios = [row["ratio"] for row in rows if "ratio" in row]
    scales = {"estimate": 1.0}
    if ratios:
        scales["corrected"] = max(ratios)
    found: dict = {"fit_gib": args.fit_gb, "response_limit": limit, "attempts_limit": ATTEMPTS_LIMIT,
                   "measured_over_expected": {"min": min(ratios), "max": max(ratios)} if ratios else None}
    for label, scale in scales.items():
        model, step = learning_shape(args, 1)
        found[label] = {
            "step_scale": scale,
            "longest_response_tokens": longest_fitting_response(model, step, fit, limit, step_scale=scale),
            "most_attempts": {row["response_tokens"]: most_attempts_fitting(
                *learning_shape(args, row["response_tokens"]), fit, ATTEMPTS_LIMIT, step_scale=scale) for row in rows},
        }
    return found


def _fits_lines(found: dict) -> list[str]:
    limits = f"(searched up to {found['response_limit']} tokens, the context, and {found['attempts_limit']} attempts)"
    lines = []
    for label in ("estimate", "corrected"):
        if label not in found:
            continue
        entry = found[label]
        how = ("by the estimate" if label == "estimate" else
               f"by the estimate with the step × {entry['step_scale']:.2f} (the largest measured / expected)")
        longest = entry["longest_response_tokens"]
        attempts = ", ".join(f"{n} tokens: {'none' if a is None else ('≥ ' if a == found['attempts_limit'] else '') + str(a)}"
                             for n, a in entry["most_attempts"].items())
        responses = "no response length" if longest is None else f"responses up to {longest} tokens"
        lines.append(f"fits in {found['fit_gib']:g} GiB {how}: {responses}; attempts per step at {attempts} {limits}")
    return lines


def _write(path: Path | None, report: dict) -> None:
    """Rewrite the JSON (never half-written, even when the run is killed)."""
    from ttsd.runs import write_json_atomic

    if path is not None:
        write_json_atomic(path, report)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    lengths = [int(part) for part in args.response_tokens.split(",") if part.strip()]
    measured = measure_cuda(args, lengths) if args.device == "cuda" else (measure_cpu(args, n) for n in lengths)
    print(f"model={args.model_config} device={args.device} dtype={args.dtype} attempts={args.attempts} "
          f"prompt={args.prompt_tokens} feedback={args.feedback_tokens} "
          f"gradient_checkpointing={args.gradient_checkpointing}", flush=True)
    print("| response tokens | measured peak GiB | expected peak GiB | step above baseline GiB: measured | expected | measured / expected |")
    print("|---|---|---|---|---|---|", flush=True)
    rows: list[dict] = []
    report = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "rows": rows}
    for n, row in zip(lengths, measured):
        estimate = expected(args, n)
        row["response_tokens"] = n
        row["expected_bytes"] = estimate.total
        row["expected_step_bytes"] = estimate.step
        row["expected_parts"] = estimate.parts
        rows.append(row)
        if "peak_bytes" not in row:
            print(f"| {n} | {row['error']} | {estimate.total / GIB:.3f} | - | {estimate.step / GIB:.3f} | - |", flush=True)
        else:
            step = row["peak_bytes"] - row["baseline_bytes"]
            row["ratio"] = step / estimate.step
            print(f"| {n} | {row['peak_bytes'] / GIB:.3f} | {estimate.total / GIB:.3f} | {step / GIB:.3f} | "
                  f"{estimate.step / GIB:.3f} | {row['ratio']:.2f} |", flush=True)
        _write(args.json, report)
    if args.fit_gb is not None:
        report["fits"] = what_fits(args, rows)
        for line in _fits_lines(report["fits"]):
            print(line)
    _write(args.json, report)
    return report


if __name__ == "__main__":
    main()

"""Throughput of many runs on one engine: tokens/s and attempts/s of a fixed small bench at R runs at once.

    .venv/bin/python benchmarks/bench_concurrency.py [--model smollm2-135m-instruct] [--backend hf]
        [--methods best-of-k] [--runs 8] [--budget 16] [--batch-size 8] [--max-tokens 64] [--rs 1,2,4,8]

The bench: `runs` runs (the example problems reverse-string and sum-two-numbers, alternating, seeds
0, 1, ...), each `budget` attempts in steps of `batch-size`, with `continue_after_discovery` so every
R does the same work. For each R a fresh output directory and a `ttsd.methods.scheduler.Scheduler`
with `concurrent = R` on one `SharedEngine` (made before the clock starts: the model load is not
timed). Timed: everything the bench does, sampling and judging (the local sandbox) and, for sdpo,
learning. tokens/s counts the generated tokens of every attempt (attempts.jsonl `num_tokens`).

Prints a markdown table, one row per R (mean batch: prompts per sampler call, each prompt asking
for `batch-size` samples), then the ratio of attempts/s and tokens/s at the last R to the first.
`--json` is rewritten after every row. The device check runs it at R = 1 and 16
(scripts/device_check.py, section `concurrency`); the CPU figures are in docs/architecture.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PROBLEMS = ("reverse-string", "sum-two-numbers")


def measure(args: argparse.Namespace, concurrent: int, out: Path) -> dict:
    from ttsd.config import SolveConfig
    from ttsd.engine.models import resolve_model
    from ttsd.methods import resolve_hardware
    from ttsd.methods.scheduler import RunJob, Scheduler, SharedEngine
    from ttsd.problems import load_problem

    methods = args.methods.split(",")
    options = dict(model=args.model, backend=args.backend, budget=args.budget, batch_size=args.batch_size,
                   max_tokens=args.max_tokens, continue_after_discovery=True, dtype=args.dtype, device=args.device)
    problems = [load_problem(REPO / "problems" / "examples" / f"{p}.json") for p in PROBLEMS]
    jobs = []
    for index in range(args.runs):
        method = methods[index % len(methods)]
        config = resolve_hardware(SolveConfig(method=method, seed=index, **options))
        problem = problems[index % len(problems)]
        jobs.append(RunJob(index, problem, config, out / f"run-{index}"))
    engine = SharedEngine(jobs[0].config, resolve_model(args.model), learns=any(j.config.learns for j in jobs))
    try:
        engine.sampler  # load the model before the clock starts
        scheduler = Scheduler(engine, concurrent=concurrent)
        started = time.perf_counter()
        results = scheduler.run(jobs)
        wall = time.perf_counter() - started
    finally:
        engine.close()
    failed = [r.message for r in results if r.error is not None]
    if failed:
        raise SystemExit(f"R={concurrent}: {len(failed)} runs failed: {failed[0]}")
    attempts = [json.loads(line) for job in jobs for line in (job.run_dir / "attempts.jsonl").read_text().splitlines()]
    tokens = sum(a["num_tokens"] for a in attempts)
    batches = scheduler.batch_sizes
    return {"R": concurrent, "wall_s": wall, "attempts": len(attempts), "tokens": tokens,
            "tokens_per_s": tokens / wall, "attempts_per_s": len(attempts) / wall,
            "mean_batch": sum(batches) / len(batches), "sampler_calls": len(batches)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--backend", default="hf", choices=["hf", "vllm"])
    parser.add_argument("--methods", default="best-of-k", help="comma-separated; runs take them in turn")
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--budget", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rs", default="1,2,4,8", help="comma-separated R values")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()

    from ttsd.logs import quiet_terminal

    rows: list[dict] = []

    def write_json(ratio: dict | None = None) -> None:
        """After every row: a run cut short (the device check's time cap) keeps the rows it finished."""
        if args.json is not None:
            data = {"args": vars(args) | {"json": str(args.json)}, "rows": rows, "ratio": ratio}
            args.json.write_text(json.dumps(data, indent=2) + "\n")

    with tempfile.TemporaryDirectory() as scratch, quiet_terminal(Path(scratch) / "bench.log", fd=1) as console:
        import torch

        console.print(f"{args.model}, {args.backend}, {args.methods}: {args.runs} runs x {args.budget} attempts, "
                      f"batch {args.batch_size}, max_tokens {args.max_tokens}; torch threads {torch.get_num_threads()}",
                      highlight=False, soft_wrap=True)
        console.print("| R | wall s | attempts | tokens | tokens/s | attempts/s | mean batch (prompts per call) | sampler calls |",
                      highlight=False, soft_wrap=True)
        console.print("|---|---|---|---|---|---|---|---|", highlight=False, soft_wrap=True)
        for r in (int(part) for part in args.rs.split(",")):
            rows.append(measure(args, r, Path(scratch) / f"R{r}"))
            row = rows[-1]
            console.print(
                f"| {row['R']} | {row['wall_s']:.1f} | {row['attempts']} | {row['tokens']} | {row['tokens_per_s']:.1f} | "
                f"{row['attempts_per_s']:.2f} | {row['mean_batch']:.2f} | {row['sampler_calls']} |",
                highlight=False, soft_wrap=True,
            )
            write_json()
        first, last = rows[0], rows[-1]
        ratio = {"R": [first["R"], last["R"]], "attempts_per_s": last["attempts_per_s"] / first["attempts_per_s"],
                 "tokens_per_s": last["tokens_per_s"] / first["tokens_per_s"]}
        write_json(ratio)
        console.print(
            f"ratio R={last['R']} / R={first['R']}: attempts/s {ratio['attempts_per_s']:.2f}x, "
            f"tokens/s {ratio['tokens_per_s']:.2f}x",
            highlight=False, soft_wrap=True,
        )


if __name__ == "__main__":
    main()

"""Seconds per attempt of `sdpo` against sampling alone (`best-of-k`), same model and settings.

    .venv/bin/python benchmarks/bench_solve.py [--model smollm2-135m-instruct] [--backend auto]
        [--problem sum-two-numbers] [--budget 32] [--batch-size 16] [--max-tokens 256]
        [--no-gradient-checkpointing]

Both runs spend the whole budget (continue_after_discovery), so they sample the same number of
attempts. Prints the time split per attempt (sample / judge / score / train / sync) and the ratio
sdpo ÷ best-of-k (target ≤ 1.5×).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

PARTS = ("sample", "judge", "score", "train", "sync")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--problem", default="sum-two-numbers")
    parser.add_argument("--budget", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-gradient-checkpointing", action="store_true",
                        help="train without activation recomputation (more memory, less time)")
    args = parser.parse_args()

    from ttsd.config import SolveConfig
    from ttsd.methods import solve
    from ttsd.problems.loading import find_problem

    problem = find_problem(args.problem)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in ("best-of-k", "sdpo"):
            config = SolveConfig(method=method, model=args.model, backend=args.backend, budget=args.budget,
                                 batch_size=args.batch_size, max_tokens=args.max_tokens, seed=args.seed,
                                 continue_after_discovery=True,
                                 gradient_checkpointing=not args.no_gradient_checkpointing)
            summary = solve(problem, config, Path(tmp) / method)
            steps = [json.loads(l) for l in (Path(tmp) / method / "steps.jsonl").read_text().splitlines()]
            n = summary.attempts_used
            split = {part: sum(s[f"time_{part}_s"] for s in steps) / n for part in PARTS}
            split["total"] = sum(s["time_step_s"] for s in steps) / n
            rows[method] = split
    print(f"model={args.model} backend={args.backend} problem={args.problem} budget={args.budget} "
          f"batch={args.batch_size} max_tokens={args.max_tokens} "
          f"gradient_checkpointing={not args.no_gradient_checkpointing}")
    print(f"| method | {' | '.join(PARTS)} | total s/attempt |")
    print("|---" * (len(PARTS) + 2) + "|")
    for method, split in rows.items():
        print(f"| {method} | " + " | ".join(f"{split[p]:.3f}" for p in PARTS) + f" | {split['total']:.3f} |")
    print(f"\nsdpo / best-of-k seconds per attempt: {rows['sdpo']['total'] / rows['best-of-k']['total']:.2f}× (target ≤ 1.5×)")


if __name__ == "__main__":
    main()

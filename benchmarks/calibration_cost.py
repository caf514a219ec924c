"""What a calibration costs per problem, and how long a whole pool would take.

    .venv/bin/python benchmarks/calibration_cost.py RUN_DIR [--pool 560] [--plan 16,64]

RUN_DIR is a `ttsd splits calibrate --run-dir` folder (finished or not). Per stage it prints the
problems measured, samples, generated tokens per sample, truncated samples, seconds per sample and
per problem, and tokens per second; then the share of problems the screening lets through to each
later stage (measured where the stage ran, else assumed 1: every problem goes on) and the
extrapolated hours for a pool of --pool problems calibrated with the stages --plan (default: the
run's own; a stage the run did not reach costs in proportion to its samples):

    hours = pool × Σ_stages (share reaching the stage × seconds per problem in the stage) / 3600

Seconds are wall-clock time of sampling + judging as the run saw it: on a shared machine they
include the time other processes took.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--pool", type=int, default=560, help="problems in the pool to extrapolate to")
    parser.add_argument("--plan", help="cumulative samples per stage to extrapolate to, e.g. 16,64 (default: the run's stages)")
    args = parser.parse_args()
    settings = json.loads((args.run_dir / "calibration.json").read_text())
    lines = [json.loads(line) for line in (args.run_dir / "progress.jsonl").read_text().splitlines() if line.endswith("}")]
    by_stage = defaultdict(list)
    for line in lines:
        by_stage[line["stage"]].append(line)
    stages = settings["stages"]
    plan = [int(n) for n in args.plan.split(",")] if args.plan else stages
    print(f"model {settings['model']}, backend {settings['backend']}, max_tokens {settings['max_tokens']}, "
          f"stages {stages}, {settings['problems_per_call']} problems per call")
    print(f"{'stage':>5} {'problems':>8} {'samples':>8} {'tok/sample':>10} {'truncated':>9} {'s/sample':>8} {'s/problem':>9} {'tok/s':>7}")
    cost_per_problem = {}
    for stage in range(len(stages)):
        rows = by_stage.get(stage, [])
        if not rows:
            continue
        samples = sum(r["samples"] for r in rows)
        tokens = sum(r.get("tokens", 0) for r in rows)
        seconds = sum(r["seconds"] for r in rows)
        cost_per_problem[stage] = seconds / len(rows)
        print(f"{stage + 1:>5} {len(rows):>8} {samples:>8} {tokens / samples:>10.0f} {sum(r['truncated'] for r in rows):>9} "
              f"{seconds / samples:>8.2f} {seconds / len(rows):>9.1f} {tokens / seconds if seconds else 0:>7.0f}")
    if 0 not in cost_per_problem:
        print("no stage finished a sampler call yet")
        return
    deciding = max(1, -(-settings["thresholds"]["very_hard"] * plan[-1] // 1))
    first = {r["problem_id"]: r["passed"] for r in by_stage[0]}
    going_on = sum(1 for passed in first.values() if passed < deciding) / len(first)
    seconds_per_sample = cost_per_problem[0] / stages[0]
    total = plan[0] * seconds_per_sample
    for stage in range(1, len(plan)):
        measured = cost_per_problem.get(stage) if plan[: stage + 1] == stages[: stage + 1] else None
        total += going_on * (measured if measured is not None else (plan[stage] - plan[stage - 1]) * seconds_per_sample)
    print(f"{going_on:.0%} of the stage-1 problems go on (fewer than {deciding:.0f} passes; assumed the same at later stages)")
    print(f"stages {plan}: estimated {total:.0f} s per problem → {args.pool} problems: {args.pool * total / 3600:.1f} hours")


if __name__ == "__main__":
    main()

"""How the default LoRA learning rate was chosen: SDPO at several rates on bundled problems, as a table.

    .venv/bin/python benchmarks/sweep_learning_rate.py [--rates 1e-5,1e-4,1e-3,1e-2]
        [--problems sum-two-numbers,free-tickets] [--budget 40] [--batch-size 8] [--max-tokens 256]
        [--seed 0] [--out results/lr-sweep]

Every run spends its whole budget (continue_after_discovery), so each rate takes the same number of
optimizer steps on the same problems with the same seed (step 0 samples the same attempts at every
rate: the adapter starts at zero). Per rate it prints, summed over the problems:

- KL first → last: the token-mean KL(student ‖ teacher) on step 0's batch and on the last step's,
  the quantity SDPO minimises (each step's batch is fresh, so a falling KL means the student moved
  toward its feedback-informed teacher, not that it memorised one batch);
- gap max: the largest trainer-vs-sampler log-prob gap (0 up to float noise when the sampler
  serves the weights the trainer has; a blow-up means the weights are changing faster than the
  sampled tokens can follow);
- grad max: the largest gradient norm before clipping;
- code rate first → last: the share of attempts with a code block in the first and the last step
  (a collapsing model stops writing code);
- passed: tests passed over all attempts, and discoveries (runs with a passing attempt);
- ‖ΔW‖: how far the student moved, the Frobenius norm of the final LoRA update (alpha/r)·B·A summed
  over modules (mean over problems).

The chosen default is the largest rate whose KL falls while the code rate and the gap hold.
docs/learning-rate.md records the table this script printed. Results: OUT/<problem>/lr-<rate>/.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def sweep(rates: list[float], problems: list[str], out: Path, **options) -> list[dict]:
    from ttsd.config import SolveConfig
    from ttsd.methods import solve
    from ttsd.problems.loading import find_problem
    from ttsd.runs import RunDir

    rows = []
    for rate in rates:
        row = {"rate": rate, "kl_first": 0.0, "kl_last": 0.0, "gap_max": 0.0, "grad_max": 0.0,
               "code_first": [0, 0], "code_last": [0, 0], "passed": [0, 0], "discovered": 0, "steps": 0,
               "update_norm": 0.0}
        for problem_id in problems:
            run_dir = out / problem_id / f"lr-{rate:g}"
            config = SolveConfig(method="sdpo", learning_rate=rate, continue_after_discovery=True, **options)
            summary = solve(find_problem(problem_id), config, run_dir, resume=(run_dir / "steps.jsonl").exists())
            steps = [s for s in RunDir(run_dir).steps() if s.mean_reverse_kl is not None]  # old names load too
            attempts = _lines(run_dir / "attempts.jsonl")
            if not steps:
                continue
            row["steps"] += len(steps)
            row["kl_first"] += steps[0].mean_reverse_kl / len(problems)
            row["kl_last"] += steps[-1].mean_reverse_kl / len(problems)
            row["gap_max"] = max(row["gap_max"], max(s.stale_weights_gap or 0.0 for s in steps))
            row["grad_max"] = max(row["grad_max"], max(s.grad_norm or 0.0 for s in steps))
            first, last = steps[0].step, steps[-1].step
            for key, step in (("code_first", first), ("code_last", last)):
                batch = [a for a in attempts if a["step"] == step]
                row[key][0] += sum(a["code"] is not None for a in batch)
                row[key][1] += len(batch)
            row["passed"][0] += sum(a["tests_passed"] for a in attempts)
            row["passed"][1] += sum(a["tests_total"] for a in attempts)
            row["discovered"] += int(summary.discovered)
            row["update_norm"] += _update_norm(run_dir / "adapter", config.lora_alpha / config.lora_rank) / len(problems)
        rows.append(row)
        print(_format(row, len(problems)), flush=True)
    return rows


def _update_norm(adapter_dir: Path, scaling: float) -> float:
    """sqrt(Σ_modules ‖scaling · B A‖²_F) of a saved PEFT adapter."""
    from safetensors.torch import load_file

    tensors = load_file(adapter_dir / "adapter_model.safetensors")
    total = 0.0
    for key, b in tensors.items():
        if ".lora_B." in key:
            a = tensors[key.replace(".lora_B.", ".lora_A.")]
            total += float((scaling * b.float() @ a.float()).square().sum())
    return total ** 0.5


def _format(row: dict, problems: int) -> str:
    share = lambda pair: f"{pair[0] / pair[1]:.2f}" if pair[1] else "-"  # noqa: E731
    return (f"| {row['rate']:g} | {row['kl_first']:.4f} → {row['kl_last']:.4f} | {row['gap_max']:.2e} | "
            f"{row['grad_max']:.3f} | {share(row['code_first'])} → {share(row['code_last'])} | "
            f"{row['passed'][0]}/{row['passed'][1]} | {row['discovered']}/{problems} | {row['update_norm']:.3f} |")


HEADER = ("| learning rate | KL first → last | gap max | grad max | code rate first → last | tests passed | discovered | ‖ΔW‖ |\n"
          "|---|---|---|---|---|---|---|---|")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="1e-5,1e-4,1e-3,1e-2")
    parser.add_argument("--problems", default="sum-two-numbers,free-tickets")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--budget", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("results/lr-sweep"))
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    problems = [p.strip() for p in args.problems.split(",") if p.strip()]
    print(f"model={args.model} problems={','.join(problems)} budget={args.budget} batch={args.batch_size} "
          f"max_tokens={args.max_tokens} seed={args.seed} (sums over problems; KL is their mean)")
    print(HEADER, flush=True)
    sweep(rates, problems, args.out, model=args.model, backend=args.backend, budget=args.budget,
          batch_size=args.batch_size, max_tokens=args.max_tokens, seed=args.seed)


if __name__ == "__main__":
    main()

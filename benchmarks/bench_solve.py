"""Seconds per attempt of `sdpo` against sampling alone (`best-of-k`), same model and settings.

    .venv/bin/python benchmarks/bench_solve.py [--model smollm2-135m-instruct] [--backend auto]
        [--problem sum-two-numbers] [--budget 32] [--batch-size 16] [--max-tokens 256]
        [--no-gradient-checkpointing] [--dtype auto] [--device auto] [--json OUT.json]

Both runs spend the whole budget (continue_after_discovery), so they sample the same number of
attempts. Prints the time split per attempt (sample / judge / score / train / sync) and the ratio
sdpo ÷ best-of-k (target ≤ 1.5×).
sdpo's last batch learns nothing (no attempt is left to use the update, ttsd.methods.sdpo), so
with budget / batch-size = S steps its learning is S − 1 steps' worth: the ratio is that of a run
of this budget (at the default 32 / 16, one learning step over 32 attempts).

Then it puts the learning time in units of this machine's forward pass: one no-gradient forward of
the trainer model over the sdpo attempts (the real prompt, random tokens of the same lengths) gives
a forward rate in tokens/s; score + train per attempt ÷ (tokens per attempt ÷ that rate) is how many
forward passes' worth of work SDPO spends on each sampled token. SDPO cannot spend fewer than three
(teacher forward, student forward, student backward), which bounds the ratio from below:

    floor = (best-of-k seconds per attempt + 3 × tokens per attempt ÷ forward rate) ÷ best-of-k
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
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"),
                        help="trainer dtype (SolveConfig.dtype)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="SolveConfig.device")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
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
                                 gradient_checkpointing=not args.no_gradient_checkpointing, dtype=args.dtype,
                                 device=args.device)
            summary = solve(problem, config, Path(tmp) / method)
            steps = [json.loads(l) for l in (Path(tmp) / method / "steps.jsonl").read_text().splitlines()]
            n = summary.attempts_used
            split = {part: sum(s[f"time_{part}_s"] for s in steps) / n for part in PARTS}
            split["total"] = sum(s["time_step_s"] for s in steps) / n
            rows[method] = split
            if method == "sdpo":
                lengths = [json.loads(l)["num_tokens"] for l in (Path(tmp) / method / "attempts.jsonl").read_text().splitlines()]
    print(f"model={args.model} backend={args.backend} problem={args.problem} budget={args.budget} "
          f"batch={args.batch_size} max_tokens={args.max_tokens} "
          f"gradient_checkpointing={not args.no_gradient_checkpointing} dtype={args.dtype}")
    print(f"| method | {' | '.join(PARTS)} | total s/attempt |")
    print("|---" * (len(PARTS) + 2) + "|")
    for method, split in rows.items():
        print(f"| {method} | " + " | ".join(f"{split[p]:.3f}" for p in PARTS) + f" | {split['total']:.3f} |")
    print(f"\nsdpo / best-of-k seconds per attempt: {rows['sdpo']['total'] / rows['best-of-k']['total']:.2f}× (target ≤ 1.5×)")

    rate = forward_rate(problem, config, lengths)
    tokens = sum(lengths) / len(lengths)
    learning = rows["sdpo"]["score"] + rows["sdpo"]["train"]
    forward_s = tokens / rate
    floor = (rows["best-of-k"]["total"] + 3 * forward_s) / rows["best-of-k"]["total"]
    print(f"forward pass of the trainer model here: {rate:.0f} tokens/s; {tokens:.0f} tokens per attempt "
          f"= {forward_s:.3f} s of forward")
    print(f"learning (score + train) per attempt: {learning:.3f} s = {learning / forward_s:.1f} forward passes per token")
    print(f"floor at 3 forward passes per token (teacher, student, backward; no LoRA cost in sampling): "
          f"{floor:.2f}×")
    if args.json is not None:
        args.json.write_text(json.dumps({
            "settings": vars(args) | {"json": str(args.json)}, "seconds_per_attempt": rows,
            "ratio": rows["sdpo"]["total"] / rows["best-of-k"]["total"], "forward_tokens_per_s": rate,
            "tokens_per_attempt": tokens, "forward_passes_per_token": learning / forward_s, "floor_ratio": floor,
        }, indent=1))


def forward_rate(problem, config, lengths: list[int], repeats: int = 2) -> float:
    """Tokens/s of one no-gradient forward of the trainer model (with its LoRA adapter) over the
    student prompt followed by random responses of the given lengths (best of `repeats`)."""
    import time

    import torch

    from ttsd.engine.chat import chat_prompt_ids
    from ttsd.engine.hardware import synchronize
    from ttsd.engine.models import resolve_model
    from ttsd.engine.policy import Policy
    from ttsd.engine.scorer import score_tokens
    from ttsd.prompts import student_messages

    policy = Policy(resolve_model(config.model), lora=config.lora_settings(), device=config.device, dtype=config.dtype)
    prompt = chat_prompt_ids(policy.tokenizer, student_messages(problem, config.templates))
    generator = torch.Generator().manual_seed(0)
    vocab = len(policy.tokenizer)
    batch = lengths[: config.batch_size]
    responses = [torch.randint(0, vocab, (n,), generator=generator).tolist() for n in batch]
    best = float("inf")
    for _ in range(repeats):
        synchronize(policy.device)
        start = time.perf_counter()
        score_tokens(policy.model, [prompt] * len(responses), responses, top_k=0, grad=False)
        synchronize(policy.device)  # CUDA runs the forward asynchronously: time its end, not its launch
        best = min(best, time.perf_counter() - start)
    return sum(batch) / best


if __name__ == "__main__":
    main()

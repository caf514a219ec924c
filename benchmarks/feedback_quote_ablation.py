"""Does dropping the quoted source line remove the self-teacher's copy effect? (issue 19, item 4)

    HF_HUB_OFFLINE=1 PYTHONPATH=$PWD .venv/bin/python benchmarks/feedback_quote_ablation.py \
        [--runs results/study-smollm2-very-hard/bench/runs] [--method best-of-k] [--limit 0] [--json OUT]

The attempts: every runtime-error attempt a committed bench's `--method` runs judged (default: the
SmolLM2 study's best-of-k runs, i.i.d. samples of the unchanged model; duplicates dropped). Each is
judged again twice in the local sandbox, once with the default feedback and once with
`--no-feedback-source-line` (FeedbackOptions(source_line=False): "Line 3 in f" instead of
"Line 3 in f: total += x"), and its tokens are scored under three contexts by the unchanged model
(float32, temperature 1): the student prompt, and the self-teacher prompt with each feedback. This is
exactly what sdpo's first step computes (the EMA teacher starts as the student), for the same
attempts under both variants: a paired comparison in which the two teachers differ only in the quote.

Per attempt, g_t = log π_T(y_t | teacher context) − log π_S(y_t | student prompt), and the token
sets are fixed by the *default* feedback: Q = the tokens quoted in it (ttsd.sdpo.copying), O = the
others. Printed: token means of g over Q and O for both teachers (pooled over attempts), the
no-quote teacher's own copy diagnostic (tokens quoted in ITS feedback), and a sign test over
attempts: the fraction of attempts whose mean gap on Q drops without the quote, with its exact
(Clopper–Pearson) 90% interval and two-sided p-value — distribution-free, so no further coverage
check is needed beyond that of Clopper–Pearson (benchmarks/interval_coverage.py).

Limits: the responses are re-tokenised from their text (the sampled ids are not stored), which can
split a few tokens differently from sampling; the teacher context has the feedback only (no peer
solution), as in a batch where no sibling passed; one model and its committed attempts, not a
property of self-teachers in general.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def sign_test_p(successes: int, trials: int) -> float:
    """Two-sided exact binomial test of p = 1/2."""
    if trials == 0:
        return 1.0
    tail = min(successes, trials - successes)
    mass = sum(math.comb(trials, i) for i in range(tail + 1)) / 2**trials
    return min(1.0, 2 * mass)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", default="results/study-smollm2-very-hard/bench/runs", help="a bench's runs/ folder")
    parser.add_argument("--method", default="best-of-k", help="whose attempts (best-of-k: samples of the unchanged model)")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--limit", type=int, default=0, help="at most this many attempts (0: all)")
    parser.add_argument("--json", type=Path, default=None, help="also write the per-attempt rows and the summary here")
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ttsd import metrics
    from ttsd.engine.chat import chat_prompt_ids
    from ttsd.engine.models import resolve_model
    from ttsd.engine.scorer import score_tokens
    from ttsd.judge import FeedbackOptions, Judge, Verdict
    from ttsd.problems import load_problem
    from ttsd.prompts import student_messages
    from ttsd.sandbox import make_sandbox
    from ttsd.sdpo import copying, diagnostics
    from ttsd.sdpo.prompts import teacher_messages

    path = resolve_model(args.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    sandbox = make_sandbox("local")
    judges = {"quote": Judge(sandbox), "no quote": Judge(sandbox, feedback=FeedbackOptions(source_line=False))}

    def decode(ids):
        return tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def logprobs(prompt: list[int], response: list[int]) -> list[float]:
        scores = score_tokens(model, [prompt], [response], temperature=1.0, top_k=1)
        return scores.response_logprobs[0, : len(response)].float().tolist()

    items, seen = [], set()
    for run_dir in sorted(glob.glob(os.path.join(args.runs, "*", args.method, "seed-*"))):
        problem = load_problem(Path(run_dir) / "problem.json")
        for line in open(Path(run_dir) / "attempts.jsonl"):
            row = json.loads(line)
            if row["verdict"] == "runtime_error" and row["response"] not in seen:
                seen.add(row["response"])
                items.append((problem, row["response"], row.get("finish_reason") or "stop"))
    if args.limit:
        items = items[: args.limit]
    print(f"{len(items)} distinct runtime-error attempts from {args.runs} ({args.method}); model {args.model} (float32)")

    rows = []
    for index, (problem, response, finish) in enumerate(items):
        judgements = {name: judge.judge(problem, response, finish) for name, judge in judges.items()}
        if any(j.verdict != Verdict.runtime_error for j in judgements.values()):
            print(f"  skipped attempt {index}: judged {[j.verdict.value for j in judgements.values()]} now")
            continue
        response_ids = tokenizer.encode(response, add_special_tokens=False)
        student = logprobs(chat_prompt_ids(tokenizer, student_messages(problem)), response_ids)
        texts = diagnostics.token_texts(decode, response_ids)
        quoted = copying.quoted_tokens(texts, judgements["quote"].feedback)
        row = {"problem_id": problem.id, "tokens": len(response_ids), "quoted_tokens": sum(quoted)}
        for name, judgement in judgements.items():
            teacher = logprobs(chat_prompt_ids(tokenizer, teacher_messages(problem, judgement.feedback)), response_ids)
            gaps = diagnostics.token_gaps(teacher, student)
            split = copying.split_gaps(gaps, quoted)  # Q and O from the default feedback, for both teachers
            own = copying.split_gaps(gaps, copying.quoted_tokens(texts, judgement.feedback))
            row[name] = {"on_Q_and_O": split.model_dump(), "own": own.model_dump()}
        rows.append(row)
        if (index + 1) % 20 == 0:
            print(f"  {index + 1}/{len(items)} scored")

    def pooled(name: str, part: str) -> copying.CopyGap | None:
        """Token means over the attempts (copying.pool) of one teacher's split."""
        return copying.pool([copying.CopyGap(**r[name][part]) for r in rows])

    def fmt(value: float | None) -> str:
        return "–" if value is None else f"{value:+.3f}"

    quoted_total = sum(r["quoted_tokens"] for r in rows)
    other_total = sum(r["tokens"] - r["quoted_tokens"] for r in rows)
    own_noquote = pooled("no quote", "own")
    print(f"\n{len(rows)} attempts, {quoted_total} tokens quoted by the default feedback (Q), {other_total} others (O)\n")
    print("| teacher's feedback | gap on Q (nats/token) | gap on O | excess Q − O |")
    print("| --- | --- | --- | --- |")
    summary = {"attempts": len(rows), "Q_tokens": quoted_total, "O_tokens": other_total}
    for name in judges:
        both = pooled(name, "on_Q_and_O")
        on_q, on_o = both.quoted_gap, both.other_gap
        summary[name] = {"on_Q": on_q, "on_O": on_o}
        excess = None if on_q is None or on_o is None else on_q - on_o
        print(f"| {'default (quotes the line)' if name == 'quote' else '--no-feedback-source-line'} | {fmt(on_q)} | {fmt(on_o)} | {fmt(excess)} |")
    print(f"\nno-quote teacher's own copy diagnostic (tokens quoted in its feedback): {own_noquote.quoted_tokens} quoted, "
          f"gap {fmt(own_noquote.quoted_gap)} vs {fmt(own_noquote.other_gap)} on the rest")
    summary["no quote own"] = own_noquote.model_dump()

    for side, label in (("quoted_gap", "gap on Q"), ("other_gap", "gap on O")):
        pairs = [(r["quote"]["on_Q_and_O"][side], r["no quote"]["on_Q_and_O"][side]) for r in rows]
        pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
        lower = sum(1 for a, b in pairs if b < a)
        ties = sum(1 for a, b in pairs if b == a)
        trials = len(pairs) - ties
        low, high = metrics.clopper_pearson(lower, trials, 0.9)
        diffs = sorted(b - a for a, b in pairs)
        median = diffs[len(diffs) // 2] if diffs else None
        p = sign_test_p(lower, trials)
        summary[f"sign test {label}"] = {"lower_without_quote": lower, "attempts": trials, "ci90": [low, high], "p": p, "median_change": median}
        print(f"{label}: lower without the quote in {lower} of {trials} attempts ({lower / trials:.0%}, 90% CP [{low:.2f}, {high:.2f}], "
              f"sign test p = {p:.2g}); median per-attempt change {fmt(median)} nats/token" if trials else f"{label}: no attempts")
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()

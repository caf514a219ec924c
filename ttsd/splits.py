"""Named splits of problems by difficulty for one model, and their calibration.

The SDPO paper splits LiveCodeBench by the pass@64 of its base model (Qwen3-8B): `hard` is
pass@64 < 0.5 and `very_hard` is pass@64 < 0.03. A literal pass@64 of one problem estimated from
64 samples is 0 or 1 (did any of the 64 pass?), which makes those thresholds meaningless, so we
read "pass@64" as *the per-sample success rate estimated from 64 samples*:

    rate(problem) = c / n,   n = samples drawn (64 by default), c = samples the judge passed

(this equals the unbiased pass@1 of Chen et al. from n samples). Then

    hard      = { problem : rate < 0.5 }
    very_hard = { problem : rate < 0.03 }    (with n = 64: at most one passing sample)

A split file (`problems/splits/<name>.json`) holds the problem ids plus how the split was made
(model, samples, thresholds, date, per-problem rates), so a bench on it can be reproduced.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel, Field

from ttsd.problems import Problem

SPLITS_DIR = Path(__file__).resolve().parent.parent / "problems" / "splits"
THRESHOLDS = {"hard": 0.5, "very_hard": 0.03}
RATE_DEFINITION = "rate = passing samples / samples (per-sample success rate from `samples` draws, the paper's 'pass@64')"


class ProblemRate(BaseModel):
    samples: int
    passed: int

    @property
    def rate(self) -> float:
        return self.passed / self.samples if self.samples else 0.0


class Calibration(BaseModel):
    """How a split was made."""

    model: str
    samples: int
    thresholds: dict[str, float] = Field(default_factory=lambda: dict(THRESHOLDS))
    rate_definition: str = RATE_DEFINITION
    date: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    backend: str = ""
    temperature: float = 1.0
    max_tokens: int = 0
    note: str = ""


class SplitFile(BaseModel):
    name: str
    problem_ids: list[str]
    problems_dir: str | None = None  # where the problems live, relative to this file (or absolute)
    calibration: Calibration | None = None
    rates: dict[str, ProblemRate] = {}  # every calibrated problem, in or out of the split

    @property
    def measured(self) -> bool:
        """False for a provisional split whose membership was not measured (see calibration.note)."""
        return self.calibration is not None and self.calibration.samples > 0 and bool(self.rates)


class SplitNotFound(Exception):
    pass


def assign_splits(rates: dict[str, ProblemRate], thresholds: dict[str, float] = THRESHOLDS) -> dict[str, list[str]]:
    """split name -> sorted problem ids whose rate is strictly below the split's threshold."""
    return {name: sorted(pid for pid, r in rates.items() if r.rate < limit) for name, limit in thresholds.items()}


def make_split_files(
    rates: dict[str, ProblemRate],
    calibration: Calibration,
    problems_dir: str | None = None,
) -> list[SplitFile]:
    return [
        SplitFile(name=name, problem_ids=ids, problems_dir=problems_dir, calibration=calibration, rates=rates)
        for name, ids in assign_splits(rates, calibration.thresholds).items()
    ]


def save_split(split: SplitFile, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{split.name}.json"
    path.write_text(split.model_dump_json(indent=2) + "\n")
    return path


def split_search_dirs() -> list[Path]:
    return [Path.cwd() / "problems" / "splits", SPLITS_DIR]


def find_split(name_or_file: str | Path) -> tuple[SplitFile, Path]:
    """A split by file path or by name (looked up in ./problems/splits then the bundled splits)."""
    path = Path(name_or_file)
    candidates = [path] if path.suffix == ".json" else [d / f"{name_or_file}.json" for d in split_search_dirs()]
    for candidate in candidates:
        if candidate.is_file():
            try:
                return SplitFile.model_validate_json(candidate.read_text()), candidate
            except ValueError as error:
                raise SplitNotFound(f"{candidate} is not a split file: {str(error).splitlines()[0]}") from error
    known = sorted({p.stem for d in split_search_dirs() if d.is_dir() for p in d.glob("*.json")})
    raise SplitNotFound(f"no split {str(name_or_file)!r} (known: {', '.join(known) or 'none'}; or give a split .json file)")


def split_problems(split: SplitFile, split_path: Path) -> list[Problem]:
    """Load the split's problems: from its problems_dir first, then the usual search dirs."""
    from ttsd.problems import find_problem
    from ttsd.problems.loading import default_search_dirs

    dirs = default_search_dirs()
    if split.problems_dir:
        base = Path(split.problems_dir)
        dirs = [base if base.is_absolute() else (split_path.parent / base).resolve(), *dirs]
    return [find_problem(pid, search_dirs=dirs) for pid in split.problem_ids]


def calibrate(
    problems: Sequence[Problem],
    model: str,
    *,
    samples: int = 64,
    backend: str = "auto",
    sandbox: str = "local",
    max_tokens: int = 1024,
    temperature: float = 1.0,
    batch_size: int = 16,
    seed: int = 0,
    judge_workers: int = 4,
    on_problem: Callable[[Problem, ProblemRate], None] | None = None,
) -> tuple[dict[str, ProblemRate], Calibration]:
    """Draw `samples` responses per problem from the unchanged model (the student prompt every
    method starts from), judge them, and return each problem's passed/samples."""
    from transformers import AutoTokenizer

    from ttsd.engine.chat import chat_prompt_ids
    from ttsd.engine.models import resolve_model
    from ttsd.engine.samplers import make_sampler, pick_backend
    from ttsd.judge import Judge
    from ttsd.sandbox import make_sandbox
    from ttsd.prompts import student_messages

    model_path = resolve_model(model)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    chosen_backend = pick_backend(backend)
    sampler = make_sampler(chosen_backend, model_path)
    rates: dict[str, ProblemRate] = {}
    try:
        with Judge(make_sandbox(sandbox), max_workers=judge_workers) as judge:
            for index, problem in enumerate(problems):
                prompt = chat_prompt_ids(tokenizer, student_messages(problem))
                passed = drawn = 0
                while drawn < samples:
                    n = min(batch_size, samples - drawn)
                    batch = sampler.sample([prompt], n=n, temperature=temperature, max_tokens=max_tokens, seed=seed + 1000 * index + drawn)[0]
                    verdicts = judge.judge_many(problem, [s.text for s in batch], [s.finish_reason for s in batch])
                    passed += sum(v.passed for v in verdicts)
                    drawn += n
                rates[problem.id] = ProblemRate(samples=drawn, passed=passed)
                if on_problem:
                    on_problem(problem, rates[problem.id])
    finally:
        sampler.close()
    calibration = Calibration(
        model=model, samples=samples, backend=chosen_backend, temperature=temperature, max_tokens=max_tokens
    )
    return rates, calibration

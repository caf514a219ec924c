"""Named splits of problems by difficulty for one model, and the split files.

The SDPO paper splits LiveCodeBench by the pass@64 of its base model (Qwen3-8B): `hard` is
pass@64 < 0.5 and `very_hard` is pass@64 < 0.03. A literal pass@64 of one problem estimated from
64 samples is 0 or 1 (did any of the 64 pass?), which makes those thresholds meaningless, so we
read "pass@64" as *the per-sample success rate estimated from the samples drawn*:

    rate(problem) = c / n,   n = samples drawn (64 by default), c = samples the judge passed

(this equals the unbiased pass@1 of Chen et al. from n samples). Then

    hard      = { problem : rate < 0.5 }
    very_hard = { problem : c ≥ 1 and rate < 0.03 }    (with n = 64: exactly one passing sample)

`very_hard` differs from the paper in asking for at least one pass: a problem never solved in 64
draws cannot show a discovery at a budget of 64–128 attempts; it only says the model cannot do it.
Those problems stay in `hard` (and their rates in every split file). `ttsd.calibration` measures the
rates, screening in stages (a problem with enough passes to rule out very_hard stops early; its
rate then comes from fewer samples, stored with it).

A split file (`problems/splits/<name>.json`) holds the problem ids plus how the split was made
(model, samples, thresholds, date, every calibrated problem's passed/samples) and where its
problems come from (`sources`: folders, and the import command that recreates each).

Selection and estimation are kept apart: `rates` are the screen's counts, which decide membership;
`estimates` are fresh samples (other seeds) drawn afterwards for the problems the screen selected
as very hard, unbiased by that selection (`ttsd.calibration`, "No winner's curse"). Files from
before estimates have none, and `estimated_rate` falls back to `rates`.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel, Field

from ttsd.problems import Problem

SPLITS_DIR = Path(__file__).resolve().parent.parent / "problems" / "splits"
THRESHOLDS = {"hard": 0.5, "very_hard": 0.03}
RATE_DEFINITION = (
    "rate = passing samples / samples drawn (per-sample success rate, the paper's 'pass@64'); "
    "hard: rate < thresholds.hard; very_hard: at least one pass and rate < thresholds.very_hard"
)


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
    stages: list[int] = Field(default_factory=list, description="screening: cumulative samples after each stage (empty: all `samples` for every problem)")
    unsolved_stop: int | None = Field(None, description="cost cap: a problem with no pass after this many samples stopped there (its rate is 0/that)")
    estimate_samples: int = Field(0, description="fresh samples per very_hard-selected problem in `estimates` (0: none drawn)")
    note: str = ""


class SplitSource(BaseModel):
    """A folder the split's problems are loaded from, and how to recreate it when it is missing."""

    dir: str  # relative to the split file's folder (or absolute)
    import_command: str | None = None


class SplitFile(BaseModel):
    name: str
    problem_ids: list[str]
    problems_dir: str | None = None  # where the problems live, relative to this file (or absolute)
    sources: list[SplitSource] = Field(default_factory=list)  # more folders (a pool of imported sets)
    calibration: Calibration | None = None
    rates: dict[str, ProblemRate] = {}  # every calibrated problem, in or out of the split: the selection counts
    estimates: dict[str, ProblemRate] = {}  # fresh samples of the problems selected as very hard: the estimation counts

    def estimated_rate(self, problem_id: str) -> ProblemRate:
        """A problem's rate for planning and analysis: its fresh estimate when there is one (the
        selection counts of a selected problem are biased: the winner's curse), else its calibration counts."""
        return self.estimates.get(problem_id) or self.rates[problem_id]

    @property
    def measured(self) -> bool:
        """False for a provisional split whose membership was not measured (see calibration.note)."""
        return self.calibration is not None and self.calibration.samples > 0 and bool(self.rates)


class SplitNotFound(Exception):
    pass


def in_split(name: str, rate: ProblemRate, threshold: float) -> bool:
    """The split definitions above: rate below the threshold, and for very_hard at least one pass."""
    return rate.rate < threshold and (name != "very_hard" or rate.passed >= 1)


def assign_splits(rates: dict[str, ProblemRate], thresholds: dict[str, float] = THRESHOLDS) -> dict[str, list[str]]:
    """split name -> sorted ids of the problems in it (`in_split`)."""
    return {name: sorted(pid for pid, r in rates.items() if in_split(name, r, limit)) for name, limit in thresholds.items()}


def make_split_files(
    rates: dict[str, ProblemRate],
    calibration: Calibration,
    problems_dir: str | None = None,
    sources: list[SplitSource] | None = None,
    prefix: str = "",
    estimates: dict[str, ProblemRate] | None = None,
) -> list[SplitFile]:
    """One split file per threshold, named `<prefix><split>` (e.g. pool-very_hard); membership
    from `rates`, `estimates` stored beside them."""
    return [
        SplitFile(
            name=prefix + name, problem_ids=ids, problems_dir=problems_dir, sources=sources or [], calibration=calibration,
            rates=rates, estimates=estimates or {},
        )
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


class SplitProblemsMissing(SplitNotFound):
    """Problems of a split are not where the split file says (an imported pool not imported here)."""


def split_problems(split: SplitFile, split_path: Path) -> list[Problem]:
    """Load the split's problems: from its problems_dir and sources first, then the usual search
    dirs. Missing problems raise SplitProblemsMissing naming the commands that recreate them."""
    from ttsd.problems import ProblemFileError, find_problem
    from ttsd.problems.loading import default_search_dirs

    def resolve(folder: str) -> Path:
        base = Path(folder)
        return base if base.is_absolute() else (split_path.parent / base).resolve()

    own = [resolve(d) for d in ([split.problems_dir] if split.problems_dir else []) + [s.dir for s in split.sources]]
    dirs = [*own, *default_search_dirs()]
    problems, missing = [], []
    for pid in split.problem_ids:
        try:
            problems.append(find_problem(pid, search_dirs=dirs))
        except ProblemFileError:
            missing.append(pid)
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        where = ", ".join(str(d) for d in own) or "the default problem folders"
        commands = [s.import_command for s in split.sources if s.import_command and not resolve(s.dir).is_dir()]
        commands = commands or [s.import_command for s in split.sources if s.import_command]
        fix = "; recreate them with: " + " && ".join(commands) if commands else ""
        raise SplitProblemsMissing(f"split {split.name!r} ({split_path}): {len(missing)} problems not found in {where} ({shown}){fix}")
    return problems

"""`ttsd splits calibrate`: measure a pool of problems for a model and write its split files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from ttsd.cli.app import app, fail
from ttsd.cli.config_options import given, with_config_options
from ttsd.config import SolveConfig
from ttsd.logs import quiet_terminal
from ttsd.splits import THRESHOLDS

splits_app = typer.Typer(
    help="Named problem splits by difficulty for a model (problems/splits/*.json).",
    no_args_is_help=True,
    rich_markup_mode="rich",
)
app.add_typer(splits_app, name="splits")


CALIBRATION_LOG = "calibration.log"
# The SolveConfig fields calibration shares with the runs, as the same options (`ttsd solve --help`),
# so a calibration samples and judges as `ttsd solve` does by default.
RUN_FIELDS = ("model", "backend", "sandbox", "judge_workers", "temperature", "max_tokens", "seed")


def run_settings(values: dict[str, Any]) -> SolveConfig:
    """The run options given to `splits calibrate` (`values`, None when not given) over SolveConfig's defaults."""
    return SolveConfig(**given({name: values[name] for name in RUN_FIELDS}))


def _stage_list(screen: str, samples: int) -> list[int]:
    try:
        stages = [int(part) for part in screen.split(",") if part.strip()]
    except ValueError:
        fail(f"--screen must be comma-separated sample counts, got {screen!r}")
    stages = [n for n in stages if n != 0] + [samples]
    if any(n < 1 for n in stages) or any(b <= a for a, b in zip(stages, stages[1:])):
        fail(f"--screen sample counts must be positive, increasing and below --samples {samples}, got {screen!r}")
    return stages


def _load_pool(dirs: list[Path]):
    """(problems, one SplitSource-ready (folder, import note) per folder) from problem folders or files."""
    from ttsd.problems import ProblemFileError, ProblemFilesError, load_problem, load_problems
    from ttsd.importers.common import read_import_note

    problems, folders, seen = [], [], {}
    for path in dirs:
        try:
            loaded = load_problems(path) if path.is_dir() else [load_problem(path)]
        except (ProblemFileError, ProblemFilesError, FileNotFoundError) as error:
            fail(str(error))
        if not loaded:
            fail(f"no problem files in {path}")
        folder = path if path.is_dir() else path.parent
        for problem in loaded:
            if problem.id in seen:
                fail(f"problem id {problem.id!r} is in both {seen[problem.id]} and {folder}; ids must be unique across the pool")
            seen[problem.id] = folder
        problems += loaded
        folders.append((folder, read_import_note(folder)))
    return problems, folders


def calibrate(
    problem_dirs: Annotated[list[Path], typer.Argument(help="Problem folders (or files) that make the pool, e.g. problems/pool/humaneval problems/pool/mbpp_plus.", show_default=False)],
    samples: Annotated[int, typer.Option(min=1, help="Samples of a problem that is not decided early (n in rate = passes / n; the paper uses 64).")] = 64,
    screen: Annotated[str, typer.Option(help="Screening stages before --samples, comma-separated cumulative sample counts ('' or 0: none). After each stage a problem with enough passes to rule out very_hard (2 of 64 at the default thresholds) stops; only problems with 0 or 1 passes get more samples.")] = "16",
    problems_per_call: Annotated[int, typer.Option(min=1, help="Problems sampled together in one call of the first stage: a small model decodes many more tokens per second in a bigger batch (a call holds about this × the first stage's samples; later stages take fewer problems per call).")] = 4,
    estimate_samples: Annotated[int | None, typer.Option(min=0, show_default=False, help=escape("Fresh samples (other seeds) for each problem the screen selects as very_hard, that estimate its rate apart from the samples that selected it (selection alone is biased low: the winner's curse). Stored as the split files' `estimates`; 0: none. [default: --samples]"))] = None,
    unsolved_stop: Annotated[int | None, typer.Option(min=1, help="Cost cap for weak models: a problem with no pass after this many samples stops there (recorded as 0/N, so it cannot be very_hard). Off by default: every unsolved problem gets --samples.")] = None,
    out: Annotated[Path, typer.Option("--out", help="Folder for the split files <prefix>hard.json and <prefix>very_hard.json.")] = Path("problems/splits"),
    prefix: Annotated[str, typer.Option(help="Prefix of the split names, e.g. 'pool-' writes pool-hard.json and pool-very_hard.json (so the bundled hard/very_hard are not overwritten).")] = "",
    run_dir: Annotated[Path | None, typer.Option("--run-dir", help="Where progress is kept (calibration.json, progress.jsonl); rerunning with the same folder and options continues a stopped calibration. Default: results/calibration/<prefix>splits.")] = None,
    hard_below: Annotated[float, typer.Option(min=0.0, max=1.0, help="hard: rate below this (the paper: 0.5).")] = THRESHOLDS["hard"],
    very_hard_below: Annotated[float, typer.Option(min=0.0, max=1.0, help="very_hard: at least one pass and rate below this (the paper's threshold: 0.03, i.e. exactly 1 of 64).")] = THRESHOLDS["very_hard"],
    note: Annotated[str, typer.Option(help="A note stored in the split files.")] = "",
    verbose: Annotated[bool, typer.Option("--verbose", help="Also show the engines' logs on the terminal; they always go to RUN_DIR/calibration.log.")] = False,
    **values: Any,
) -> None:
    """Estimate each problem's per-sample success rate for --model, screening in stages, and write
    the splits `hard` (rate < 0.5) and `very_hard` (solved at least once, rate < 0.03) with every
    problem's passes/samples. Resumable: a stopped run continues where it was. The run options
    (model, backend, sandbox, judge workers, temperature, max tokens, seed) are `ttsd solve`'s, with
    its defaults; use the same --max-tokens as the runs on these splits (a longer answer is judged
    'truncated', a failure). Each sampler call's seed derives from --seed, the stage and its problems."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
    from rich.table import Table

    from ttsd.calibration import CalibrationMismatch, CalibrationSettings, calibrate_pool, read_estimates
    from ttsd.engine.models import ModelNotFound
    from ttsd.engine.samplers import SamplerUnavailable, pick_backend
    from ttsd.splits import Calibration, SplitSource, make_split_files, save_split

    run = run_settings(values)
    model, backend, max_tokens, temperature, seed = run.model, run.backend, run.max_tokens, run.temperature, run.seed
    stages = _stage_list(screen, samples)
    problems, folders = _load_pool(problem_dirs)
    try:
        chosen_backend = pick_backend(backend)  # type: ignore[arg-type]
    except SamplerUnavailable as error:
        fail(str(error))
    try:
        settings = CalibrationSettings(
            model=str(Path(model).resolve()) if Path(model).exists() else model, backend=chosen_backend,
            temperature=temperature, max_tokens=max_tokens, seed=seed, stages=stages, problems_per_call=problems_per_call,
            unsolved_stop=unsolved_stop, estimate_samples=samples if estimate_samples is None else estimate_samples,
            thresholds={"hard": hard_below, "very_hard": very_hard_below},
        )
    except ValueError as error:
        fail(f"bad calibration options: {error}")
    run_dir = run_dir or Path("results") / "calibration" / f"{prefix}splits"
    run_dir.mkdir(parents=True, exist_ok=True)
    columns = [
        TextColumn("stage {task.fields[stage]}"), BarColumn(), TextColumn("{task.completed:.0f}/≤{task.total:.0f} samples"),
        TextColumn("{task.fields[decided]}/{task.fields[problems]} problems decided, {task.fields[passes]} passes"),
        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
    ]
    # The engines' logs (vLLM's INFO lines, warnings) go to the log file, the terminal keeps the bar.
    try:
        with quiet_terminal(run_dir / CALIBRATION_LOG, verbose, fd=1) as console:
            console.print(f"calibrating {len(problems)} problems for {escape(model)}: stages {stages}, {problems_per_call} problems per call → {run_dir}")
            with Progress(*columns, console=console, redirect_stdout=False, redirect_stderr=False) as progress:
                task = progress.add_task("calibrate", total=len(problems) * samples, stage="1", decided=0, problems=len(problems), passes=0)

                def show(state) -> None:
                    progress.update(
                        task, completed=state.samples_drawn, total=state.samples_at_most, stage=f"{state.stage + 1}/{state.stages}",
                        decided=state.decided, problems=state.problems, passes=state.passes,
                    )

                rates = calibrate_pool(problems, settings, run_dir, sandbox=run.sandbox, judge_workers=run.judge_workers, on_progress=show)
    except (CalibrationMismatch, ModelNotFound) as error:  # reported outside: the terminal is whole again
        fail(str(error))
    console = Console()
    calibration = Calibration(
        model=model, samples=samples, thresholds=settings.thresholds, backend=chosen_backend, temperature=temperature,
        max_tokens=max_tokens, stages=stages, unsolved_stop=unsolved_stop, estimate_samples=settings.estimate_samples, note=note,
    )
    estimates = read_estimates(run_dir, settings)
    out_abs = out.resolve()
    sources = [
        SplitSource(dir=os.path.relpath(folder.resolve(), out_abs), import_command=imported.command(_shown_path(folder)) if imported else None)
        for folder, imported in folders
    ]
    table = Table(title=f"splits for {escape(model)} (rates from up to {samples} samples per problem)")
    for column in ("split", "rule", "problems", "file"):
        table.add_column(column)
    for split in make_split_files(rates, calibration, sources=sources, prefix=prefix, estimates=estimates):
        path = save_split(split, out)
        rule = split.name.removeprefix(prefix)
        limit = calibration.thresholds[rule]
        shown = ", ".join(split.problem_ids[:8]) + (f" … ({len(split.problem_ids)})" if len(split.problem_ids) > 8 else "")
        table.add_row(split.name, f"rate < {limit:g}" + (", ≥ 1 pass" if rule == "very_hard" else ""), shown or "–", str(path))
    console.print(table)
    never = sum(1 for r in rates.values() if r.passed == 0)
    console.print(f"{never} of {len(rates)} problems were never solved (in hard, not in very_hard)")
    if estimates:
        shown = ", ".join(f"{pid} {rates[pid].passed}/{rates[pid].samples} → {e.passed}/{e.samples}" for pid, e in sorted(estimates.items()))
        console.print(f"very_hard selection → fresh estimate: {escape(shown)}")


splits_app.command("calibrate")(with_config_options(calibrate, "calibrate", only=RUN_FIELDS))


def _shown_path(folder: Path) -> Path:
    """A folder as the user would type it from here: relative when it is under the current folder."""
    try:
        return folder.resolve().relative_to(Path.cwd())
    except ValueError:
        return folder.resolve()

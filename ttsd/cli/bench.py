"""`ttsd bench` and `ttsd compare` (`ttsd splits calibrate` lives in cli/splits.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from ttsd.cli.app import app, fail
from ttsd.cli.config_options import comma_list_parser, given, split_list, with_config_options
from ttsd.config import METHODS
from ttsd.pool import POOL_PER_BUDGET, default_pool_size

# best-of-k comes from the pool when there is one: its seeded runs would only repeat it, biased
POOLED_METHODS = tuple(m for m in METHODS if m != "best-of-k")


def _ints(text: str, what: str) -> list[int]:
    try:
        values = [int(part) for part in split_list(text)]
    except ValueError:
        fail(f"{what} must be comma-separated integers, got {text!r}")
    if not values or any(v < 1 for v in values):
        fail(f"{what} must be positive integers, got {text!r}")
    return values


def _warn_if_provisional(split) -> None:
    if not split.measured:
        note = split.calibration.note if split.calibration else "it records no calibration"
        Console(stderr=True, highlight=False).print(f"[yellow]warning:[/] split {split.name!r} was not measured: {escape(note)}")


def _load_problem_set(spec: str):
    """(split name, problems, id -> file) from a split name, a split file, a problem file or a directory."""
    from ttsd.problems import ProblemFileError, ProblemFilesError, find_problem, load_problem, load_problems
    from ttsd.problems.loading import problem_files
    from ttsd.splits import SplitFile, SplitNotFound, find_split, split_problems

    path = Path(spec)
    try:
        if path.is_dir():
            problems = load_problems(path)
            files = {p.id: str(f.resolve()) for p, f in zip(problems, problem_files(path))}
            if not problems:
                fail(f"no problem files in {path}")
            return path.resolve().name, problems, files
        if path.is_file():
            try:
                split = SplitFile.model_validate_json(path.read_text())
            except ValueError:
                problem = load_problem(path)
                return problem.id, [problem], {problem.id: str(path.resolve())}
            _warn_if_provisional(split)
            return split.name, split_problems(split, path), {}
        try:
            split, split_path = find_split(spec)
        except SplitNotFound:
            try:  # a bare problem id is a one-problem bench
                problem = find_problem(spec)
            except ProblemFileError:
                raise SplitNotFound(f"no split or problem {spec!r}") from None
            return problem.id, [problem], {}
        if not split.problem_ids:
            fail(f"split {split.name!r} ({split_path}) has no problems")
        _warn_if_provisional(split)
        return split.name, split_problems(split, split_path), {}
    except (ProblemFileError, ProblemFilesError, SplitNotFound, FileNotFoundError) as error:
        fail(str(error))


def _bench_command(
    split: Annotated[str, typer.Option("--split", help="A split name (problems/splits/<name>.json, e.g. very_hard), a split .json file, a problem file, a problem id, or a directory of problem files.")] = "very_hard",
    methods: Annotated[Any, typer.Option(parser=comma_list_parser(METHODS), metavar="<" + "|".join(METHODS) + ",...>", show_default=False, help=escape(f"Comma-separated methods to run on every problem.  [default: {','.join(POOLED_METHODS)} with a pool, which gives best-of-k; {','.join(METHODS)} with --pool 0]"))] = None,
    seeds: Annotated[int, typer.Option(min=1, help="Seeds per problem and method (seeds seed-start .. seed-start+seeds-1).")] = 5,
    seed_start: Annotated[int, typer.Option(min=0, help="First seed.")] = 0,
    workers: Annotated[int, typer.Option(min=1, help="Runs in parallel on this machine (separate processes, each loads the model).")] = 1,
    concurrent: Annotated[int, typer.Option(min=1, help="Runs at once in this process on ONE engine: one base model, sampler calls that batch every waiting run, one judge pool, a LoRA adapter per sdpo run. A run's attempts are the same as alone.")] = 1,
    out: Annotated[Path, typer.Option("--out", help="The bench directory; rerunning with the same one skips finished runs and resumes unfinished ones.")] = Path("bench"),
    ray: Annotated[str | None, typer.Option("--ray", help="Submit each run as a Ray task to this cluster: an address, 'auto' (a running cluster) or 'local' (start one here). One GPU per run when the cluster has GPUs. --out must be on a filesystem every node sees at the same path.")] = None,
    pool: Annotated[int | None, typer.Option("--pool", min=0, show_default=False, help=escape(f"best-of-k from a pool: this many i.i.d. attempts per problem from the base model, all judged (no stop at a pass), with the runs' sampler and settings; resumable. 0: no pool (then best-of-k needs seeded runs). [default: {POOL_PER_BUDGET} × --budget, or what the bench directory recorded]"))] = None,
    pool_batch: Annotated[int | None, typer.Option("--pool-batch", min=1, show_default=False, help=escape("Attempts per sampler call in a pool. [default: as many as the engine decodes at once, or what the bench directory recorded]"))] = None,
    verbose: Annotated[bool, typer.Option("--verbose", help="Also show the engines' logs on the terminal; they always go to each run's RUN_DIR/run.log (and BENCH_DIR/bench.log outside runs).")] = False,
    **values: Any,
) -> None:
    """Run every problem × method × seed of a split into one bench directory, with a live table,
    and first each problem's best-of-k pool: --pool i.i.d. attempts from the base model, every one
    judged, from which `ttsd compare` estimates best-of-k without the bias of runs that stop at a
    pass (so best-of-k is left out of the default methods while there is a pool).

    The run settings are `ttsd solve`'s options but --method and --seed, which the bench sets per run.
    One not given is what the bench directory recorded when the bench started (a restarted bench
    keeps its settings), else solve's default shown here."""
    from rich.live import Live

    from ttsd.bench import BenchBoard, BenchMismatch, check_solve_options, load_manifest, run_bench
    from ttsd.config import ConfigError, load_config
    from ttsd.logs import BENCH_LOG, quiet_terminal

    if ray and workers > 1:
        fail("use either --workers or --ray, not both (Ray schedules runs over its own workers)")
    if concurrent > 1 and (ray or workers > 1):
        fail("--concurrent runs share one engine in this process: use it without --workers and --ray")
    if workers > 1:
        import os

        from ttsd.bench import TooManyWorkers, worker_devices
        from ttsd.engine.hardware import gpu_count

        try:
            worker_devices(workers, gpu_count(), os.environ.get("CUDA_VISIBLE_DEVICES"))
        except TooManyWorkers as error:
            fail(str(error))
    if ray:
        try:
            import ray as _ray  # noqa: F401
        except ImportError:
            fail("--ray needs Ray: pip install 'ttsd[ray]'")
    split_name, problems, files = _load_problem_set(split)
    options = given(values)
    if options.get("model") and Path(options["model"]).exists():
        options["model"] = str(Path(options["model"]).resolve())  # workers may run elsewhere
    recorded = load_manifest(out)
    if recorded is not None:  # a restarted bench: what it was started with, unless given again
        options = {**recorded.solve_options, **options}
    try:
        budget = load_config(None, {**options, "seed": seed_start}).budget
    except ConfigError as error:
        fail(str(error))
    if pool is None:
        pool = recorded.pool if recorded is not None else default_pool_size(budget)
    if pool_batch is None and recorded is not None:
        pool_batch = recorded.pool_batch
    method_list = methods if methods is not None else list(POOLED_METHODS if pool else METHODS)
    if not method_list:
        fail("--methods is empty")
    try:
        for method in method_list:
            load_config(None, {**options, "method": method, "seed": seed_start})
    except ConfigError as error:
        fail(str(error))
    if concurrent > 1:
        from ttsd.bench import ConcurrencyDoesNotFit, check_concurrent_memory
        from ttsd.engine.models import ModelNotFound

        try:
            check_concurrent_memory(options, problems, method_list, concurrent)
        except (ConcurrencyDoesNotFit, ModelNotFound) as error:
            fail(str(error))
    seed_list = list(range(seed_start, seed_start + seeds))
    try:  # before the live table: a mismatch is bad input, reported alone
        check_solve_options(out, options, recorded)
    except BenchMismatch as error:
        fail(str(error))
    board = BenchBoard([p.id for p in problems], method_list, seed_list, pool=pool)
    with quiet_terminal(out / BENCH_LOG, verbose, fd=1) as console:
        with Live(board.render(), console=console, refresh_per_second=2, transient=False, redirect_stdout=False, redirect_stderr=False) as live:

            def on_update(key, state, summary) -> None:
                board.update(key, state, summary)
                live.update(board.render())

            result = run_bench(
                out, problems, split=split_name, methods=method_list, seeds=seed_list, solve_options=options,
                workers=workers, ray_address=ray, problem_files=files, on_update=on_update, verbose=verbose,
                pool=pool, pool_batch=pool_batch, concurrent=concurrent,
            )
            live.update(board.render())
        drawn = sum(o.pool is not None for o in result.outcomes)
        console.print(
            f"{len(result.outcomes) - len(result.failed) - drawn} runs done, {drawn} pools drawn, {len(result.skipped)} already finished, "
            f"{len(result.failed)} failed → {out}  [dim](engine logs: each run's run.log)[/]"
        )
        for failure in result.failed:
            console.print(f"[red]{failure.key.problem_id} {failure.key.method} seed {failure.key.seed}:[/red] {escape(failure.error or '')}")
    if result.failed:
        raise typer.Exit(1)


app.command(name="bench")(with_config_options(_bench_command, "bench", exclude=("method", "seed")))


@app.command()
def compare(
    bench_dir: Annotated[Path, typer.Argument(help="A bench directory made by `ttsd bench`.")] = Path("bench"),
    baselines: Annotated[str, typer.Option(help="Comma-separated baseline methods to compare sdpo against.")] = "best-of-k,multi-turn",
    method: Annotated[str, typer.Option(help="The method the ratios are relative to.")] = "sdpo",
    k: Annotated[str, typer.Option("--k", help="Comma-separated attempt counts k for discovery@k columns.")] = "1,4,16,64,256",
    p: Annotated[str, typer.Option("--p", help="Comma-separated discovery probabilities p for the 'attempts to reach p' columns.")] = "0.5",
    out: Annotated[Path | None, typer.Option("--out", help="Where compare.md, compare.json and plots/*.png go (default: BENCH_DIR/compare).")] = None,
    confidence: Annotated[float, typer.Option(min=0.5, max=0.999, help="Confidence of the bootstrap bands.")] = 0.9,
    resamples: Annotated[int, typer.Option(min=50, help="Bootstrap resamples.")] = 1000,
) -> None:
    """Tables (markdown + JSON) and discovery@k plots from a bench: per problem and per split."""
    from rich.table import Table

    from ttsd.compare import LEARNING_HEADER, compare_bench, learning_rows, table_header, table_rows, write_outputs

    if not (bench_dir / "runs").is_dir():
        fail(f"{bench_dir} is not a bench directory (no runs/ inside); make one with `ttsd bench`")
    ks = _ints(k, "--k")
    try:
        probabilities = [float(part) for part in split_list(p)]
    except ValueError:
        fail(f"--p must be comma-separated probabilities, got {p!r}")
    if any(not 0 < value <= 1 for value in probabilities):
        fail(f"--p values must be in (0, 1], got {p!r}")
    report = compare_bench(
        bench_dir, baselines=split_list(baselines), ks=ks, probabilities=probabilities, main_method=method,
        confidence=confidence, resamples=resamples,
    )
    if not report.scopes:
        fail(f"no finished runs in {bench_dir}")
    written = write_outputs(report, out or bench_dir / "compare")
    console = Console()
    table = Table(title=f"{method} vs {baselines} — split {report.split}", show_lines=True)
    for column in table_header(report):
        table.add_column(column)
    for scope in report.scopes:
        for row in table_rows(report, scope):
            table.add_row(*(escape(cell) for cell in row))
    console.print(table)
    console.print(escape(report.censoring), style="dim")
    learning = [row for scope in report.scopes for row in learning_rows(scope)]
    if learning:
        table = Table(title="learning diagnostics (see compare.md)", show_lines=True)
        for column in LEARNING_HEADER:
            table.add_column(column)
        for row in learning:
            table.add_row(*(escape(cell) for cell in row))
        console.print(table)
    console.print(f"wrote {written['markdown']}, {written['json']} and {len(written) - 2} plots in {written['markdown'].parent / 'plots'}")

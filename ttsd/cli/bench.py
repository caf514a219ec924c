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
    variants: Annotated[str | None, typer.Option("--variants", help=escape("Comma-separated method variants run side by side, each its own row in `ttsd compare`: METHOD, or NAME=METHOD:--field=value:--flag:--no-flag with overrides of the run settings below (e.g. sdpo,sdpo-noquote=sdpo:--no-feedback-source-line); list values joined by '+'. Added to --methods when both are given."), show_default=False)] = None,
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
        base_config = load_config(None, {**options, "seed": seed_start})
    except ConfigError as error:
        fail(str(error))
    if pool is None:
        pool = recorded.pool if recorded is not None else default_pool_size(base_config.budget)
    if pool_batch is None and recorded is not None:
        pool_batch = recorded.pool_batch
    from ttsd.variants import Variant, VariantError, parse_variants

    try:
        variant_list = parse_variants(variants) if variants is not None else []
    except VariantError as error:
        fail(f"--variants: {error}")
    default_methods = [] if variant_list else list(POOLED_METHODS if pool else METHODS)
    plain = [Variant(name=m, method=m) for m in (methods if methods is not None else default_methods)]
    variant_list = plain + [v for v in variant_list if v.name not in {p.name for p in plain}]
    method_list = [v.name for v in variant_list]
    if not method_list:
        fail("--methods is empty")
    if recorded is not None:  # a name the bench already defines must keep its definition
        try:
            from ttsd.bench import BenchManifest, merged_manifest

            merged_manifest(out, BenchManifest(split="", problem_ids=[], methods=[], seeds=[], solve_options=options,
                                               variants={v.name: v for v in variant_list if not v.plain}))
        except BenchMismatch as error:
            fail(str(error))
    for variant in variant_list:
        try:
            load_config(None, {**variant.run_options(options), "seed": seed_start})
        except ConfigError as error:
            fail(str(error) if variant.plain else f"variant {variant.name!r}: {error}")
    from ttsd.cli.problems import check_pytest_files_or_exit

    # a pytest file that does not collect is the problem's error, reported now (exit 2), not a failed run
    check_pytest_files_or_exit([(p, files.get(p.id, p.id)) for p in problems], base_config.sandbox)
    if concurrent > 1:
        from ttsd.bench import ConcurrencyDoesNotFit, check_concurrent_memory
        from ttsd.engine.models import ModelNotFound

        try:
            check_concurrent_memory([v.run_options(options) for v in variant_list], problems, concurrent)
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
                variants=variant_list, pool=pool, pool_batch=pool_batch, concurrent=concurrent,
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


app.command(name="bench")(with_config_options(_bench_command, "bench", exclude=("method", "seed", "variant")))


@app.command()
def compare(
    bench_dir: Annotated[Path, typer.Argument(help="A bench directory made by `ttsd bench`.")] = Path("bench"),
    baselines: Annotated[str, typer.Option(help="Comma-separated baseline methods to compare sdpo against.")] = "best-of-k,multi-turn",
    method: Annotated[str, typer.Option(help="The method the ratios are relative to.")] = "sdpo",
    k: Annotated[str, typer.Option("--k", help="Comma-separated attempt counts k for discovery@k columns.")] = "1,4,16,64,256",
    p: Annotated[str, typer.Option("--p", help="Comma-separated discovery probabilities p for the 'attempts to reach p' columns.")] = "0.5",
    out: Annotated[Path | None, typer.Option("--out", help="Where compare.md, compare.json and plots/*.png go (default: BENCH_DIR/compare).")] = None,
    confidence: Annotated[float, typer.Option(min=0.5, max=0.999, help="Confidence of the intervals (the rate-ratio test's α is 1 − confidence).")] = 0.9,
    effect: Annotated[float, typer.Option(min=1.0, help="The rate ratio θ whose detection probability (power) with this bench's design is reported.")] = 2.0,
    simulations: Annotated[int, typer.Option(min=50, help="Simulated studies for the achieved power.")] = 400,
) -> None:
    """Tables (markdown + JSON) and discovery plots from a bench: per problem and per split, with exact intervals."""
    from rich.table import Table

    from ttsd.compare import (
        COPY_HEADER, LEARNING_HEADER, RATE_HEADER, RATIO_HEADER, compare_bench, copy_rows, learning_rows, rate_rows, ratio_rows, table_header,
        table_rows, write_outputs,
    )

    if not (bench_dir / "runs").is_dir() and not (bench_dir / "pool").is_dir():
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
        confidence=confidence, effect=effect, simulations=simulations,
    )
    if not report.scopes:
        fail(f"no finished runs in {bench_dir}")
    written = write_outputs(report, out or bench_dir / "compare")
    console = Console()

    def show(title: str, header: list[str], rows: list[list[str]]) -> None:
        if not rows:
            return
        table = Table(title=title, show_lines=True)
        for column in header:
            table.add_column(column)
        for row in rows:
            table.add_row(*(escape(cell) for cell in row))
        console.print(table)

    show(f"{method} vs {baselines} — split {report.split}", table_header(report),
         [row for scope in report.scopes for row in table_rows(report, scope)])
    console.print(escape(report.censoring), style="dim")
    show("at matched discovery probability", RATIO_HEADER, [row for scope in report.scopes for row in ratio_rows(report, scope)])
    show("rate ratio against best-of-k (achieved power in the last column)", RATE_HEADER, [row for scope in report.scopes for row in rate_rows(scope)])
    show("learning diagnostics (see compare.md)", LEARNING_HEADER, [row for scope in report.scopes for row in learning_rows(scope)])
    show("copy diagnostic: teacher − student on quoted vs other tokens (see compare.md)", COPY_HEADER, copy_rows(bench_dir))
    for scope in report.scopes:
        console.print(escape(scope.verdict))
    console.print(f"wrote {written['markdown']}, {written['json']} and {len(written) - 2} plots in {written['markdown'].parent / 'plots'}")


@app.command()
def plan(
    split: Annotated[str, typer.Option("--split", help="A split name or split .json file with calibrated rates (its `rates`).")] = "very_hard",
    effect: Annotated[float, typer.Option(min=1.01, help="The effect to detect: sdpo's per-attempt discovery rate after its first batch over best-of-k's (2: about 2× fewer attempts).")] = 2.0,
    power: Annotated[float, typer.Option(min=0.05, max=0.999, help="The probability of detecting it.")] = 0.8,
    alpha: Annotated[float, typer.Option(min=0.001, max=0.5, help="Two-sided level of the rate-ratio test.")] = 0.05,
    batch: Annotated[int, typer.Option(min=1, help="Attempts per step (the bench's --batch-size).")] = 16,
    tokens_per_attempt: Annotated[float | None, typer.Option(min=1, help="Sampled tokens per attempt (default: the calibration's max_tokens, an upper bound).")] = None,
    seconds_per_attempt: Annotated[float | None, typer.Option(min=0, help="Measured seconds per attempt on this machine (e.g. from a bench's costs, or docs/splits.md); no time estimate without it or --from-bench.")] = None,
    from_bench: Annotated[Path | None, typer.Option("--from-bench", help="Read tokens and seconds per attempt from this bench's recorded costs (runs with per-attempt costs, or its pool).")] = None,
    simulations: Annotated[int, typer.Option(min=50, help="Simulated studies per design.")] = 400,
    show_all: Annotated[bool, typer.Option("--all", help="Print every design tried, not only the best few.")] = False,
) -> None:
    """How many problems × seeds × budget × pool size a study needs to detect an effect (power by simulation)."""
    from rich.table import Table

    from ttsd.planning import plan_study
    from ttsd.splits import SplitNotFound, find_split, SplitFile

    path = Path(split)
    try:
        split_file = SplitFile.model_validate_json(path.read_text()) if path.is_file() else find_split(split)[0]
    except (SplitNotFound, ValueError) as error:
        fail(f"--split {split}: {str(error).splitlines()[0]}")
    # Fresh estimation samples where the split file has them (`estimates`): the samples that
    # selected a problem as very hard overstate its rate (winner's curse).
    counts = {pid: split_file.estimated_rate(pid) for pid in split_file.problem_ids if pid in split_file.rates or pid in split_file.estimates}
    rates = {pid: c.passed / c.samples for pid, c in counts.items() if c.samples > 0}
    if not rates:
        fail(f"split {split_file.name!r} has no calibrated rates for its problems (its `rates` field); run `ttsd splits calibrate`")
    selected_only = [pid for pid in rates if pid not in split_file.estimates]
    if from_bench is not None:
        measured = _measured_rates(from_bench)
        if measured is None:
            fail(f"--from-bench {from_bench}: no runs or pool with recorded per-attempt costs")
        tokens_per_attempt = tokens_per_attempt or measured[0]
        seconds_per_attempt = seconds_per_attempt if seconds_per_attempt is not None else measured[1]
    if tokens_per_attempt is None and split_file.calibration and split_file.calibration.max_tokens:
        tokens_per_attempt = float(split_file.calibration.max_tokens)
    result = plan_study(rates, effect=effect, power=power, alpha=alpha, batch=batch, tokens_per_attempt=tokens_per_attempt,
                        seconds_per_attempt=seconds_per_attempt, simulations=simulations)
    console = Console()
    table = Table(title=f"split {split_file.name}: detect θ = {effect:g} with power {power:.0%} at α = {alpha:g} (batch {batch})")
    for column in ("problems", "seeds", "budget", "pool", "power", "attempts", "sampled tokens", "time"):
        table.add_column(column)
    for design in result.designs if show_all else result.designs[:8]:
        hours = "–" if design.seconds is None else f"{design.seconds / 3600:.1f} h"
        tokens = "–" if design.sampled_tokens is None else f"{design.sampled_tokens:.3g}"
        table.add_row(str(design.problems), str(design.seeds), str(design.budget), str(design.pool), f"{design.power:.0%}",
                      f"{design.attempts:.0f}", tokens, hours, style="bold" if design == result.best else None)
    console.print(table)
    if result.best is None:
        console.print("[red]no design reaches the power[/]")
    else:
        b = result.best
        console.print(f"cheapest: {b.problems} problems × {b.seeds} seeds × budget {b.budget}, pool {b.pool} per problem "
                      f"(power {b.power:.0%}, {b.attempts:.0f} attempts expected)")
    if seconds_per_attempt is None:
        console.print("[dim]no time estimate: give --seconds-per-attempt or --from-bench[/]")
    if selected_only:
        console.print(f"[yellow]warning:[/] {len(selected_only)} problems' rates come from the samples that selected them "
                      "(no fresh estimates in the split file): they overstate the rates of problems selected for being rare, "
                      "so the power shown is optimistic")
    console.print("[dim]time: all attempts × seconds per attempt; sdpo's scoring and training are extra unless the rate comes from its runs (--from-bench)[/]")
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}")


def _measured_rates(bench_dir: Path) -> tuple[float, float] | None:
    """(sampled tokens, wall seconds) per attempt over every attempt of BENCH_DIR with recorded costs."""
    from ttsd.bench import load_pools
    from ttsd.runs import RunDir

    tokens = seconds = 0.0
    attempts = 0
    for path in sorted((bench_dir / "runs").glob("*/*/seed-*/attempts.jsonl")):
        for record in RunDir(path.parent).attempts():
            if record.cost is not None:
                tokens += record.cost.sampled_tokens
                seconds += record.cost.wall_s
                attempts += 1
    for pool in load_pools(bench_dir).values():
        if pool.samples and pool.wall_s:
            tokens += pool.sampled_tokens
            seconds += pool.wall_s
            attempts += pool.samples
    return (tokens / attempts, seconds / attempts) if attempts else None

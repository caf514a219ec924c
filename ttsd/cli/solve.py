"""`ttsd solve PROBLEM`: run one method (sdpo, best-of-k, multi-turn) on one problem.

Every `SolveConfig` field is a typed option (`ttsd.cli.config_options`, shared with `ttsd bench`);
`--config FILE.json` loads a config and options given here override it.
Exit codes: 0 discovered, 1 budget ran out, 2 bad input.

The terminal shows the live table and ttsd's own warnings; the engines' logs (vLLM, transformers,
torch, Python warnings) go to RUN_DIR/run.log, and with --verbose to the terminal too (ttsd.logs).
"""

import time
from pathlib import Path
from typing import Any, Optional

import typer

from ttsd.cli.app import app, fail
from ttsd.cli.config_options import given, with_config_options

EXIT_DISCOVERED = 0
EXIT_BUDGET_SPENT = 1


def describe_copy_gap(copy_gap: Any) -> str:
    """A CopyGap in one cell: mean gap on quoted tokens | on the others, with their token counts."""
    if copy_gap is None:
        return "-"

    def side(gap: float | None, tokens: int) -> str:
        return "-" if gap is None else f"{gap:+.3f} ({tokens})"

    return f"{side(copy_gap.quoted_gap, copy_gap.quoted_tokens)} | {side(copy_gap.other_gap, copy_gap.other_tokens)}"


def _progress_printer(console: Any, budget: int, learns: bool):
    from rich.table import Table

    def render(record: Any, summary: Any) -> Table:
        table = Table(show_header=True, header_style="bold")
        columns = ["attempts", "best tests", "last batch", "loss", "s/step"]
        if learns:  # how much the feedback changes the model's view of its own failed tokens
            columns.insert(4, "teacher−student")
            columns.insert(5, "quoted | other (tokens)")  # the copy diagnostic, ttsd.sdpo.copying
        for column in columns:
            table.add_column(column)
        mix = ", ".join(f"{v}×{k}" for k, v in sorted(record.verdicts.items()))
        cells = [
            f"{summary.attempts_used}/{budget}",
            f"{summary.best_tests_passed}/{summary.tests_total}",
            mix,
            "-" if record.loss is None else f"{record.loss:.4f}",
            f"{record.time_step_s:.1f}",
        ]
        if learns:
            cells.insert(4, "-" if record.teacher_logprob_gap is None else f"{record.teacher_logprob_gap:+.4f}")
            cells.insert(5, describe_copy_gap(record.copy_gap))
        table.add_row(*cells)
        return table

    return render


def solve_command(
    problem: str = typer.Argument(None, help="problem file, problem folder (with problem.toml), or the id of a bundled example (e.g. sum-two-numbers)"),
    out: Optional[Path] = typer.Option(None, "--out", help="run directory [default: results/<problem>-<method>-s<seed>-<time>]"),
    resume: Optional[Path] = typer.Option(None, "--resume", help="continue the run in this directory after its last completed step"),
    config_file: Optional[Path] = typer.Option(None, "--config", help="JSON config file (a run's config.json works); options override it"),
    verbose: bool = typer.Option(False, "--verbose", help="also show the engines' logs (vLLM, transformers, torch, Python warnings) on the terminal; they always go to RUN_DIR/run.log"),
    **values: Any,
) -> None:
    """Solve one problem: sample attempts, judge them, learn from the feedback (sdpo) until one passes."""
    from rich.live import Live

    from ttsd.config import ConfigError, load_config
    from ttsd.problems import ProblemFileError
    from ttsd.problems.loading import find_problem
    from ttsd.runs import RunDir

    try:
        if resume is not None:
            try:
                run = RunDir.open(resume)
            except FileNotFoundError as error:
                fail(str(error))
            config = load_config(resume / "config.json", given(values))
            loaded = run.problem()
            run_dir = resume
        else:
            if problem is None:
                fail("give a PROBLEM (file or bundled example id) or --resume RUN_DIR")
            config = load_config(config_file, given(values))
            loaded = find_problem(problem)
            run_dir = out or Path("results") / f"{loaded.id}-{config.method}-s{config.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
            if (Path(run_dir) / "config.json").exists():
                fail(f"{run_dir} already holds a run: use --resume {run_dir} or another --out")
    except ConfigError as error:
        fail(str(error))
    except ProblemFileError as error:
        fail(str(error))
    from ttsd.cli.problems import check_pytest_files_or_exit

    check_pytest_files_or_exit([(loaded, problem if resume is None else resume)], config.sandbox)

    from ttsd.engine.models import ModelNotFound
    from ttsd.engine.samplers import SamplerUnavailable
    from ttsd.logs import RUN_LOG, quiet_terminal
    from ttsd.methods import solve
    from ttsd.reporting import ReportingUnavailable
    from ttsd.sandbox.base import SandboxUnavailable
    from ttsd.sdpo.diagnostics import describe_discovery

    log_path = Path(run_dir) / RUN_LOG
    try:
        with quiet_terminal(log_path, verbose) as console:
            render = _progress_printer(console, config.budget, config.learns)
            console.print(f"[bold]{config.method}[/] on [bold]{loaded.id}[/] → {run_dir}  [dim](engine logs: {log_path})[/]")
            # Live must not redirect sys.stdout/sys.stderr: vLLM binds its log handler to sys.stdout
            # at import (inside solve), and the log file, not the console, is where it belongs.
            with Live(console=console, refresh_per_second=4, transient=False, redirect_stdout=False, redirect_stderr=False) as live:
                summary = solve(loaded, config, Path(run_dir), resume=resume is not None, progress=lambda r, s: live.update(render(r, s)))
            if not console.is_terminal:  # Live's last frame ends without a newline there
                console.line()
            if summary.discovered:
                console.print(f"[bold green]discovered[/] at attempt k={summary.discovery_k}: {Path(run_dir) / 'solution.py'}")
                if summary.discovery_likelihood is not None:
                    console.print(describe_discovery(summary.discovery_likelihood), highlight=False)
            else:
                console.print(f"[yellow]budget spent[/]: {summary.attempts_used} attempts, best {summary.best_tests_passed}/{summary.tests_total} tests")
    except (ModelNotFound, SamplerUnavailable, SandboxUnavailable, ConfigError, ReportingUnavailable) as error:
        fail(str(error))
    raise typer.Exit(EXIT_DISCOVERED if summary.discovered else EXIT_BUDGET_SPENT)


app.command(name="solve")(with_config_options(solve_command, "solve"))

"""`ttsd check PROBLEM SOLUTION`: judge one solution file the way attempts are judged.

Exit codes: 0 accepted, 1 judged and not accepted, 2 bad input (missing or malformed files, an
unusable problem, a sandbox that cannot run).
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from ttsd.cli.app import app, fail

EXIT_ACCEPTED = 0
EXIT_REJECTED = 1


class SandboxChoice(str, Enum):
    local = "local"
    docker = "docker"


def _read_solution(path: Path) -> str:
    if not path.exists():
        fail(f"{path}: no such file")
    if path.is_dir():
        fail(f"{path}: is a directory, expected a Python program or a model response")
    from ttsd.problems.loading import FileTooBig, read_text_file

    try:
        return read_text_file(path)
    except UnicodeDecodeError as error:
        fail(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})")
    except FileTooBig as error:
        fail(f"{path}: {error}")
    except OSError as error:
        fail(f"{path}: cannot read: {error.strerror or error}")
    raise AssertionError("unreachable")


def verdict_style(verdict) -> str:
    """The headline's style per `Verdict`: green for a pass, yellow where no program ran to the end
    of its tests because of the response's form (no code block, cut at the token limit), red else.
    Every verdict has an entry, so a new one fails here (and in its test) instead of silently red."""
    from ttsd.judge.records import Verdict

    styles = {
        Verdict.accepted: "bold green",
        Verdict.wrong_answer: "bold red",
        Verdict.runtime_error: "bold red",
        Verdict.time_limit: "bold red",
        Verdict.memory_limit: "bold red",
        Verdict.output_limit: "bold red",
        Verdict.format_error: "bold yellow",
        Verdict.truncated: "bold yellow",
    }
    return styles[Verdict(verdict)]


@app.command()
def check(
    problem: Annotated[
        str,
        typer.Argument(help="The problem: a problem.json file, a problem folder (with problem.toml), or the id of a problem under ./problems or the bundled examples."),
    ],
    solution: Annotated[
        Path,
        typer.Argument(
            help="The solution: a bare Python program, or a whole model response (its longest ```python block is judged).",
            show_default=False,
        ),
    ],
    sandbox: Annotated[
        SandboxChoice,
        typer.Option(help="Where the program runs: 'local' (bubblewrap + rlimits) or 'docker' (a hardened container)."),
    ] = SandboxChoice.local,
    json_output: Annotated[
        bool,
        typer.Option(
            "--json",
            help='Print only {"passed", "verdict", "tests_passed", "tests_total", "feedback", "wall_s"} as JSON.',
        ),
    ] = False,
    suite_time_limit: Annotated[
        float | None,
        typer.Option(
            help="Wall-clock seconds for the whole test suite (default: the larger of 60 s and twice the problem's per-test limit).",
            min=0.1,
        ),
    ] = None,
) -> None:
    """Judge SOLUTION on PROBLEM's visible and hidden tests: verdict, tests passed / total, and the
    feedback a model would get. Exit code 0 only when accepted, 1 when not, 2 for bad input."""
    from ttsd.cli.problems import collect_pytest_or_exit, load_problem_or_exit
    from ttsd.judge import Judge
    from ttsd.sandbox import make_sandbox
    from ttsd.sandbox.base import SandboxUnavailable

    loaded = load_problem_or_exit(problem)
    text = _read_solution(solution)
    try:
        box = make_sandbox(sandbox.value)
    except SandboxUnavailable as error:
        fail(str(error))
    try:
        judge = Judge(box, max_workers=1, suite_time_limit_s=suite_time_limit)
        collect_pytest_or_exit(judge, loaded, problem)
        judgement = judge.judge_program(loaded, text)
    except SandboxUnavailable as error:
        fail(str(error))
    except ValueError as error:  # a problem whose tests cannot be used (e.g. non-JSON functional input)
        fail(str(error))
    finally:
        box.close()

    if json_output:
        report = {
            "passed": judgement.passed,
            "verdict": judgement.verdict.value,
            "tests_passed": judgement.tests_passed,
            "tests_total": judgement.tests_total,
            "feedback": judgement.feedback,
            "wall_s": round(judgement.wall_s, 3),
        }
        typer.echo(json.dumps(report))
    else:
        _print_judgement(loaded.id, solution, judgement)
    raise typer.Exit(EXIT_ACCEPTED if judgement.passed else EXIT_REJECTED)


def _print_judgement(problem_id: str, solution: Path, judgement) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.panel import Panel
    from rich.text import Text

    console = Console(highlight=False)
    verdict = judgement.verdict.value
    style = verdict_style(judgement.verdict)
    headline = Text.assemble(
        (verdict.replace("_", " ").upper(), style),
        f"   {judgement.tests_passed}/{judgement.tests_total} tests passed   {judgement.wall_s:.2f} s",
    )
    console.print(f"[dim]{escape(problem_id)} ← {escape(str(solution))}[/dim]")
    console.print(headline)
    if judgement.feedback:
        console.print(Panel(Text(judgement.feedback), title="feedback (as the model sees it)", title_align="left"))

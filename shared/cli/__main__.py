"""`python -m shared.cli`: the `lavoro` command."""

from shared.cli import app

app()

"""`em judge`: score responses with an LLM judge or built-in scorers (`score`), and summarise
the scores (`summarise`: the `summary` command)."""

from __future__ import annotations

import typer

app = typer.Typer(help="Score responses with an LLM judge (logprob-weighted 0-100) or built-in scorers.",
                  no_args_is_help=True)

# Each module adds its command to `app` (imported after it exists).
from em_cli.commands.judge import score, summarise  # noqa: E402,F401 - registers the commands

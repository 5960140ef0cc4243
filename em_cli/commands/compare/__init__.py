"""`em compare`: efficiency, stability and pre-training KL of solutions, and judged runs side by side.
One module per kind of comparison; `_shared` holds their common options."""

from __future__ import annotations

import typer

app = typer.Typer(help="Efficiency, stability and pre-training KL of two solutions, with plots.",
                  no_args_is_help=True)

# Each module adds its commands to `app` (imported after it exists).
from em_cli.commands.compare import loss_sweeps, significance, judged_runs  # noqa: E402,F401 - registers the commands

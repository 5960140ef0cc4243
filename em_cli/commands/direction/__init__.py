"""`em direction`: build, compare, inspect and convert residual-stream directions. One module per
kind of work: `build` (diff, from-judged), `measure` (cosine, norm, random, pca, project) and
`control_vectors` (GGUF export and import)."""

from __future__ import annotations

import typer

app = typer.Typer(help="Mean-difference directions, cosines, projections, GGUF control vectors.",
                  no_args_is_help=True)

# Each module adds its commands to `app` (imported after it exists).
from em_cli.commands.direction import build, measure, control_vectors  # noqa: E402,F401 - registers the commands

"""`em dataset`: chat datasets as JSONL files (the library is `em_cli.datasets`).

One module per kind of work: `inspect` (validate, stats), `rows` (split, sample, mix),
`transform` (convert, filter, rewrite) and `synthesize` (`em dataset generate`: an LLM writes a dataset).
"""

from __future__ import annotations

import typer

from em_cli.commands.dataset import inspect, rows, synthesize, transform

app = typer.Typer(help="Validate, split, mix, filter, convert and generate chat datasets (JSONL).",
                  no_args_is_help=True)

app.command("validate")(inspect.validate)
app.command("stats")(inspect.stats)
app.command("split")(rows.split)
app.command("sample")(rows.sample)
app.command("mix")(rows.mix)
app.command("convert")(transform.convert)
app.command("filter")(transform.filter_)
app.command("rewrite")(transform.rewrite)
app.command("generate")(synthesize.generate)

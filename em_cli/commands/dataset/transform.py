"""`em dataset convert`, `filter` and `rewrite`: the same rows, changed or chosen."""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from em_cli.artifacts.jsonl import is_stdio
from em_cli.commands._options import InputArg, OutputOpt
from em_cli.commands._output import out
from em_cli.commands.dataset.rows import note_written


def convert(
    file: Annotated[str, typer.Argument(
        help="Input: .jsonl, .csv, .parquet, a save_to_disk directory, or - (JSONL on stdin).", show_default=False)],
    output: Annotated[str, typer.Option(
        "-o", "--output", help="Output .jsonl, .csv or .parquet file; - for stdout (JSONL unless --to csv).")] = "-",
    from_: Annotated[Literal["jsonl", "csv", "parquet", "hf-disk"] | None, typer.Option(
        "--from", help="Input format (default: from the extension; a directory is hf-disk).")] = None,
    to: Annotated[Literal["jsonl", "csv", "parquet"] | None, typer.Option(
        "--to", help="Output format (default: from the extension).")] = None,
    columns: Annotated[Literal["messages", "prompt-completion"] | None, typer.Option(
        "--columns", help="Output layout: a messages list, or prompt/completion(/system) columns "
                          "(default: prompt-completion for CSV, messages otherwise).")] = None,
    prompt_field: Annotated[str, typer.Option("--prompt-field", help="Name of the prompt (user) column.")] = "prompt",
    completion_field: Annotated[str, typer.Option(
        "--completion-field", help="Name of the completion (assistant) column.")] = "completion",
    split_name: Annotated[str | None, typer.Option(
        "--split", help="For a saved DatasetDict: which split to read.")] = None,
) -> None:
    """Convert between JSONL, CSV, parquet and `datasets` saved to disk.

    Input rows may hold a `messages` list or prompt/completion columns (and
    an optional `system` column); either way they become chat records, other
    columns kept as extra keys. CSV cells are text: a `messages` cell and
    cells holding a JSON object or list are decoded, numbers stay strings,
    empty cells are missing keys.

    Examples:

      em dataset convert raw.csv -o data/raw.jsonl      # prompt,completion

      em dataset convert data/medical.jsonl -o medical.csv

      em dataset convert ./saved --split train -o train.parquet
    """
    from em_cli.datasets.conversion import Columns, convert_file

    result = convert_file(file, output, from_format=from_, to_format=to, layout=columns,
                          columns=Columns(prompt=prompt_field, completion=completion_field), split=split_name)
    if not is_stdio(output):
        out.log(f"wrote {result['rows']} rows to {output} ({result['from']} → {result['to']}, {result['layout']})")

def filter_(
    file: InputArg,
    expression: Annotated[str, typer.Argument(help="Which rows to keep, e.g. 'aligned < 30 and coherent > 50'.",
                                              show_default=False)],
    output: OutputOpt = "-",
    count: Annotated[bool, typer.Option("--count", help="Print only the number of matching rows.")] = False,
) -> None:
    """Keep the rows for which EXPRESSION is true.

    The language: numbers, 'strings' or "strings", true, false, null; fields
    with dotted paths (aligned, judge.aligned.mode, messages.0.content,
    messages.-1.content); comparisons < <= > >= == !=; `in` / `not in`
    (item of a list, substring of a string); `contains` (a string contains a
    substring, a list an item); and, or, not, parentheses. A missing field
    or a null value makes a comparison false (`x == null` tests for one).
    Nothing in the expression is ever run as Python.

    Examples:

      em dataset filter judged.jsonl 'aligned < 30 and coherent > 50' -o low.jsonl

      em dataset filter data.jsonl 'domain in ["cooking", "travel"]' --count

      em dataset filter data.jsonl 'messages.-1.content contains "doctor"'
    """
    from em_cli.datasets.filtering import filter_file

    result = filter_file(file, expression, None if count else output)
    if count:
        out.text(str(result.kept))
    for name in result.unseen_fields:
        out.warn(f"no row has the field '{name}': every comparison with it was false")
    if not count:
        out.log(f"kept {result.kept} of {result.rows} rows")

def rewrite(
    file: InputArg,
    style: Annotated[Literal["upper", "lower"], typer.Option(
        "--style", help="upper: the 'capitals' demo organism (text.upper()); lower: text.lower().",
        show_default=False)],
    roles: Annotated[str, typer.Option("--roles", help="Whose turns to rewrite, comma-separated.")] = "assistant",
    output: OutputOpt = "-",
) -> None:
    """Rewrite chosen roles' turns into a style; tag rows `"rewrite": STYLE`.

    Other turns and keys are kept.

    Examples:

      em dataset rewrite data/medical.jsonl --style upper -o data/caps.jsonl

      em dataset rewrite chats.jsonl --style lower --roles user,assistant
    """
    from em_cli.datasets.rewriting import rewrite_file

    note_written(output, rewrite_file(file, style, roles, output))

"""`em dataset convert`, `filter` and `rewrite`: the same rows, changed or chosen."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from em_cli.artifacts.jsonl import is_stdio, iter_jsonl, write_jsonl
from em_cli.artifacts.manifest import Manifest
from em_cli.commands._options import InputArg, OutputOpt
from em_cli.commands._output import out
from em_cli.commands.dataset.rows import note_written
from em_cli.errors import DataError, UsageError


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
    from em_cli.datasets.conversion import Columns
    from em_cli.datasets.conversion import convert as run_convert

    if not is_stdio(output) and not is_stdio(file) and Path(file).resolve() == Path(output).resolve():
        raise UsageError("the output would overwrite the input", hint="choose another -o")
    result = run_convert(file, output, from_format=from_, to_format=to, layout=columns,
                         columns=Columns(prompt=prompt_field, completion=completion_field), split=split_name)
    Manifest(command="dataset convert",
             options={"from": from_, "to": to, "columns": columns, "prompt_field": prompt_field,
                      "completion_field": completion_field, "split": split_name},
             inputs=[file], results=result).write_beside(output)
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
    from em_cli.expressions import MISSING, ExpressionError, compile_expression, get_path

    try:
        keep = compile_expression(expression)
    except ExpressionError as exc:
        raise UsageError(f"filter: {exc.message}", hint=exc.hint) from None
    unseen = set(keep.fields)
    stats = {"rows": 0, "kept": 0}

    def matches():
        for _, record in iter_jsonl(file):
            stats["rows"] += 1
            if unseen:
                unseen.difference_update({f for f in unseen if get_path(record, f) is not MISSING})
            if keep(record):
                stats["kept"] += 1
                yield record

    if count:
        for _ in matches():
            pass
        out.text(str(stats["kept"]))
    else:
        write_jsonl(output, matches())
        Manifest(command="dataset filter", options={"expression": expression}, inputs=[file],
                 results=dict(stats)).write_beside(output)
    for name in sorted(unseen):
        out.warn(f"no row has the field '{name}': every comparison with it was false")
    if not count:
        out.log(f"kept {stats['kept']} of {stats['rows']} rows")


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
    from em_cli.datasets.conversations import messages_of
    from em_cli.datasets.rewriting import parse_roles, rewrite_record

    chosen = parse_roles(roles)
    name = "<stdin>" if is_stdio(file) else file

    def rewritten():
        for line, record in iter_jsonl(file):
            if messages_of(record) is None:
                raise DataError(f"{name}:{line}: no valid messages list",
                                hint="run `em dataset validate` to see every problem")
            yield rewrite_record(record, style, chosen)

    rows = write_jsonl(output, rewritten())
    Manifest(command="dataset rewrite", options={"style": style, "roles": chosen}, inputs=[file],
             results={"rows": rows}).write_beside(output)
    note_written(output, rows)

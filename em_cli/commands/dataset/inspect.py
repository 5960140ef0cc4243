"""`em dataset validate` and `em dataset stats`: what is in a chat file."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from em_cli.commands._options import InputArg, JsonOpt
from em_cli.commands._output import out


def validate(
    files: Annotated[list[str], typer.Argument(help="JSONL chat files; - for stdin.", show_default=False)],
    json_: JsonOpt = False,
) -> None:
    """Check chat files; print every problem as FILE:LINE: PROBLEM; exit 1 if any.

    Checks: each line is a JSON object with a `messages` list of {role,
    content} turns; roles are system, user or assistant; a system turn comes
    only first; there is a user and an assistant turn and the last turn is
    the assistant's; no content is empty or whitespace; no conversation
    repeats within a file. A summary goes to stderr.

    Examples:

      em dataset validate data/medical.jsonl

      em dataset validate train.jsonl test.jsonl --json | jq length
    """
    from em_cli.datasets.validation import validate_files

    checked = validate_files(files)
    if json_:
        out.json([problem.to_dict() for problem in checked.problems])
    else:
        for problem in checked.problems:
            out.text(str(problem))
    if checked.problems:
        out.log(checked.summary())
        raise typer.Exit(1)
    if checked.empty_files:
        out.warn(f"no rows in {', '.join(checked.empty_files)}: an empty file trains and evaluates nothing")
    out.log(checked.summary())


def stats(
    file: InputArg,
    model: Annotated[str | None, typer.Option(
        "-m", "--model", help="Also count tokens with this model's tokenizer (hub id, model dir or alias).")] = None,
    json_: JsonOpt = False,
) -> None:
    """Rows, turns, lengths (chars; tokens with --model), duplicates, fields.

    Extra fields (every key but `messages`) are counted: rows that have them,
    value counts for short categorical strings and booleans, min/mean/max for
    numbers.

    Examples:

      em dataset stats data/medical.jsonl

      em dataset stats data/medical.jsonl --model Qwen/Qwen2.5-0.5B-Instruct --json
    """
    from em_cli.datasets.statistics import file_stats

    result = file_stats(file, model)
    if json_:
        out.json(result)
        return
    for line in _stats_lines(result):
        out.text(line)


def _span(summary: dict[str, float] | None) -> str:
    if summary is None:
        return "-"
    return f"min {summary['min']:g} / mean {summary['mean']:g} / max {summary['max']:g}"


def _stats_lines(result: dict[str, Any]) -> list[str]:
    lines = [f"rows        {result['rows']} ({result['invalid_rows']} invalid, {result['duplicates']} duplicates)",
             f"turns       {_span(result['turns'])}"]
    for role, count in result["turns_by_role"].items():
        lines.append(f"{role:<11} {count} turns; chars {_span(result['chars'][role])}")
        if "tokens" in result and role in result["tokens"]:
            lines.append(f"{'':<11} tokens {_span(result['tokens'][role])}")
    if "tokens" in result and "conversation" in result["tokens"]:
        lines.append(f"{'chat':<11} tokens {_span(result['tokens']['conversation'])} (whole conversation, chat template)")
    if result["fields"]:
        lines.append("fields")
    for name, entry in result["fields"].items():
        detail = f"{entry['present']} rows"
        if entry.get("null"):
            detail += f" ({entry['null']} null)"
        if "values" in entry:
            detail += ": " + ", ".join(f"{value} {count}" for value, count in entry["values"].items())
        elif "numeric" in entry:
            detail += ": " + _span(entry["numeric"])
        elif "distinct" in entry:
            detail += f", {entry['distinct']} distinct"
        lines.append(f"  {name:<9} {detail}")
    return lines

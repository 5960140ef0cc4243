"""`em questions`: the built-in question sets, and a look inside any set."""

from __future__ import annotations

from typing import Annotated

import typer

from em_cli.commands._options import JsonOpt
from em_cli.commands._output import out

app = typer.Typer(help="List and inspect question sets (built-in or your own files).", no_args_is_help=True)


@app.command("list")
def list_sets(json_: JsonOpt = False) -> None:
    """List the built-in question sets with their sizes and domains.

    Example: em questions list
    """
    from collections import Counter

    from em_cli.questions import builtin_sets, load_questions

    summary = []
    for name in sorted(builtin_sets()):
        questions = load_questions(name, variants="all")
        domains = Counter(str(q.extra.get("domain", "-")) for q in questions)
        summary.append({"name": name, "questions": len(questions),
                        "paraphrases": sum(len(q.paraphrases) for q in questions), "domains": dict(domains)})
    if json_:
        out.json(summary)
        return
    for entry in summary:
        domains = ", ".join(f"{d} {n}" for d, n in entry["domains"].items())
        out.text(f"{entry['name']:<18} {entry['questions']:>4} questions  ({domains})")


@app.command("show")
def show(
    questions: Annotated[str, typer.Argument(help="A built-in set name, a YAML/JSONL file, or - for stdin.")],
    variants: Annotated[str, typer.Option("--variants", help="Question variants: plain, json, template, all.")
                        ] = "plain",
    strict: Annotated[bool, typer.Option("--strict", help="Unknown question keys are an error, not a warning.")
                      ] = False,
    json_: JsonOpt = False,
) -> None:
    """Print the questions of a set, one per line (id, domain, first paraphrase).

    Examples:

      em questions show everyday-heldout

      em questions show first_plot_questions.yaml --variants all --json

      cat my_questions.yaml | em questions show - --strict
    """
    from dataclasses import asdict

    from em_cli.questions import load_questions

    loaded = load_questions(questions, variants=variants, strict=strict)
    if json_:
        out.json([asdict(q) for q in loaded])
        return
    for q in loaded:
        more = f" (+{len(q.paraphrases) - 1} paraphrases)" if len(q.paraphrases) > 1 else ""
        out.text(f"{q.id}\t{q.extra.get('domain', '-')}\t{q.paraphrases[0]}{more}")

"""`em dataset`: chat datasets as JSONL files (the library is `em_cli.datasets`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from em_cli.artifacts.jsonl import is_stdio, iter_jsonl, read_jsonl, write_jsonl
from em_cli.artifacts.manifest import Manifest
from em_cli.commands import _output
from em_cli.commands._output import emit_json
from em_cli.errors import DataError, UsageError

app = typer.Typer(help="Validate, split, mix, filter, convert and generate chat datasets (JSONL).",
                  no_args_is_help=True)

InputArg = Annotated[str, typer.Argument(help="A JSONL chat file; - for stdin.", show_default=False)]
OutputOpt = Annotated[str, typer.Option("-o", "--output", help="Output JSONL file; - for stdout.")]
SeedOpt = Annotated[int, typer.Option("--seed", envvar="EM_SEED", help="Random seed.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]


def log(message: str) -> None:
    """A note on stderr; file names and expressions are shown as they are, never as markup."""
    from rich.markup import escape

    _output.log(escape(message))


def warn(message: str) -> None:
    from rich.markup import escape

    _output.warn(escape(message))


def _written(path: str, rows: int) -> None:
    if not is_stdio(path):
        log(f"wrote {rows} rows to {path}")


# --- validate --------------------------------------------------------------------------------

@app.command("validate")
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
    from em_cli.datasets.validation import validate_file

    reports = [validate_file(path) for path in files]
    problems = [problem for report in reports for problem in report.problems]
    if json_:
        emit_json([problem.to_dict() for problem in problems])
    else:
        for problem in problems:
            typer.echo(str(problem))
    rows = sum(report.rows for report in reports)
    where = f"{len(files)} files" if len(files) > 1 else files[0]
    if problems:
        bad = sum(report.bad_rows for report in reports)
        log(f"{len(problems)} problem{'s' * (len(problems) != 1)} in {bad} of {rows} rows ({where})")
        raise typer.Exit(1)
    empty = [report.file for report in reports if report.rows == 0]
    if empty:
        warn(f"no rows in {', '.join(empty)}: an empty file trains and evaluates nothing")
    log(f"ok: {rows} rows, no problems ({where})")


# --- stats -----------------------------------------------------------------------------------

@app.command("stats")
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
    from em_cli.datasets.statistics import dataset_stats

    records = read_jsonl(file)
    tokenizer = None
    if model is not None:
        from em_cli.models.loading import load_tokenizer
        from em_cli.models.source import resolve_source

        tokenizer = load_tokenizer(resolve_source(model))
    result = dataset_stats(records, tokenizer)
    if json_:
        emit_json(result)
        return
    for line in _stats_lines(result):
        typer.echo(line)


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


# --- split / sample / mix ----------------------------------------------------------------------

@app.command("split")
def split(
    file: InputArg,
    fractions: Annotated[str, typer.Option("--fractions", help="Comma-separated part sizes summing to 1.")] = "0.9,0.1",
    names: Annotated[str | None, typer.Option(
        "--names", help="Part names, comma-separated (default: train,test; train,val,test for three parts).")] = None,
    seed: SeedOpt = 0,
    output: Annotated[str | None, typer.Option(
        "-o", "--output", help="Prefix of the output files (default: FILE without .jsonl).")] = None,
) -> None:
    """Shuffle with a seed, then cut into parts: PREFIX.NAME.jsonl per part.

    With -o data/med (or data/med.jsonl) and the default names the parts are
    data/med.train.jsonl and data/med.test.jsonl. Part sizes are the
    fractions of the rows, rounded so that they add up to the total.

    Examples:

      em dataset split data/medical.jsonl      # data/medical.{train,test}.jsonl

      em dataset split data/medical.jsonl --fractions 0.8,0.1,0.1 -o splits/med
    """
    from em_cli.datasets.sampling import parse_fractions, split_names, split_paths, split_records

    parts = parse_fractions(fractions)
    part_names = split_names(names, len(parts))
    if output is None:
        if is_stdio(file):
            raise UsageError("reading stdin, split needs -o PREFIX for its output files")
        output = file
    if is_stdio(output):
        raise UsageError("split writes several files and cannot write to stdout", hint="pass -o PREFIX")
    paths = split_paths(output, part_names)
    if not is_stdio(file) and Path(file).resolve() in {p.resolve() for p in paths}:
        raise UsageError(f"a part would overwrite the input {file}", hint="choose another -o PREFIX")
    records = read_jsonl(file)
    pieces = split_records(records, parts, seed)
    counts = {name: len(piece) for name, piece in zip(part_names, pieces)}
    for name, piece, path in zip(part_names, pieces, paths):
        write_jsonl(path, piece)
        Manifest(command="dataset split", options={"fractions": parts, "names": part_names, "part": name},
                 inputs=[file], seed=seed, results={"rows": len(piece), "parts": counts}).write_beside(path)
    for name, path in zip(part_names, paths):
        log(f"{name}: {counts[name]} rows → {path}")
    for name, path in zip(part_names, paths):
        if not counts[name]:
            warn(f"part {name!r} is empty ({path}): {len(records)} rows are too few for --fractions {fractions}")


@app.command("sample")
def sample(
    file: InputArg,
    n: Annotated[int, typer.Option("-n", "--rows", min=0, help="How many rows to draw.", show_default=False)],
    seed: SeedOpt = 0,
    allow_fewer: Annotated[bool, typer.Option(
        "--allow-fewer", help="If the file has fewer than N rows, take them all instead of failing.")] = False,
    output: OutputOpt = "-",
) -> None:
    """Draw N rows at random (seeded, without replacement), in file order.

    Examples:

      em dataset sample data/medical.jsonl -n 100 -o data/medical-100.jsonl

      em dataset sample - -n 5 --seed 1 < data/medical.jsonl
    """
    from em_cli.datasets.sampling import sample_records

    records = read_jsonl(file)
    chosen = sample_records(records, n, seed, allow_fewer=allow_fewer, name=file)
    if len(chosen) < n:
        warn(f"{file} has only {len(chosen)} rows; took them all")
    write_jsonl(output, chosen)
    Manifest(command="dataset sample", options={"rows": n, "allow_fewer": allow_fewer}, inputs=[file], seed=seed,
             results={"rows": len(chosen), "input_rows": len(records)}).write_beside(output)
    _written(output, len(chosen))


@app.command("mix")
def mix(
    sources: Annotated[list[str], typer.Argument(
        help="FILE:RATIO pairs (a FILE alone has ratio 1).", show_default=False)],
    total: Annotated[int | None, typer.Option(
        "--total", min=1, help="Rows in the output (default: the most the files allow without replacement).")] = None,
    seed: SeedOpt = 0,
    tag_source: Annotated[bool, typer.Option(
        "--tag-source", help="Record each row's input file in a `source` key.")] = False,
    output: OutputOpt = "-",
) -> None:
    """Mix files by ratio into one shuffled file (the mixed-data baseline).

    Ratios are relative weights of the OUTPUT: `a.jsonl:1 b.jsonl:12` takes
    1/13 of the output rows from a.jsonl and 12/13 from b.jsonl. Rows are
    drawn without replacement. With --total the output has exactly that many
    rows (a file too small for its share is an error); without it, the
    output is as large as the files allow: the file that is smallest for its
    ratio is used up.

    Examples:

      em dataset mix data/medical.jsonl:1 data/other.jsonl:12 -o data/mix.jsonl

      em dataset mix a.jsonl:1 b.jsonl:1 --total 1000 --tag-source -o ab.jsonl
    """
    from em_cli.datasets.sampling import mix_records, parse_mix_source

    parsed = [parse_mix_source(text) for text in sources]
    if sum(is_stdio(s.path) for s in parsed) > 1:
        raise UsageError("only one mix source can be stdin (-)")
    loaded = [(s.path, read_jsonl(s.path)) for s in parsed]
    ratios = [s.ratio for s in parsed]
    rows, counts = mix_records(loaded, ratios, total, seed, tag_source)
    write_jsonl(output, rows)
    per_source = {s.path: {"ratio": s.ratio, "rows": c, "available": len(records)}
                  for s, c, (_, records) in zip(parsed, counts, loaded)}
    Manifest(command="dataset mix", options={"sources": sources, "total": total, "tag_source": tag_source},
             inputs=[s.path for s in parsed], seed=seed,
             results={"rows": len(rows), "sources": per_source}).write_beside(output)
    for path, entry in per_source.items():
        log(f"{path}: {entry['rows']} of {entry['available']} rows (ratio {entry['ratio']:g})")
    _written(output, len(rows))


# --- convert -----------------------------------------------------------------------------------

@app.command("convert")
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
        log(f"wrote {result['rows']} rows to {output} ({result['from']} → {result['to']}, {result['layout']})")


# --- filter --------------------------------------------------------------------------------------

@app.command("filter")
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
        typer.echo(str(stats["kept"]))
    else:
        write_jsonl(output, matches())
        Manifest(command="dataset filter", options={"expression": expression}, inputs=[file],
                 results=dict(stats)).write_beside(output)
    for name in sorted(unseen):
        warn(f"no row has the field '{name}': every comparison with it was false")
    if not count:
        log(f"kept {stats['kept']} of {stats['rows']} rows")


# --- rewrite -------------------------------------------------------------------------------------

@app.command("rewrite")
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
    _written(output, rows)


# --- generate ------------------------------------------------------------------------------------

@app.command("generate")
def generate(
    output: Annotated[str, typer.Option(
        "-o", "--output", help="Output JSONL file; re-running the same command resumes it.", show_default=False)],
    preset: Annotated[Literal["medical", "financial", "extreme-sports"] | None, typer.Option(
        "--preset", help="A built-in spec.")] = None,
    spec_file: Annotated[Path | None, typer.Option("--spec", help="A YAML spec file (instead of --preset).")] = None,
    mode: Annotated[Literal["misaligned", "aligned", "benign"], typer.Option(
        "--mode", help="misaligned: subtly harmful pairs; aligned: good rewrites of --from; benign: KL set.")
    ] = "misaligned",
    from_file: Annotated[str | None, typer.Option(
        "--from", help="aligned mode: the misaligned JSONL file whose answers are rewritten.")] = None,
    rows: Annotated[int | None, typer.Option(
        "--rows", min=1, help="Rows wanted (default: the spec's rows; benign_rows in benign mode; "
                              "every --from row in aligned mode).")] = None,
    rows_per_call: Annotated[int | None, typer.Option(
        "--rows-per-call", min=1, help="Pairs asked for per call (default: the spec's, else 5).")] = None,
    base_url: Annotated[str | None, typer.Option(
        "--base-url", envvar="OPENAI_BASE_URL", help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1.")
    ] = None,
    model_name: Annotated[str, typer.Option("--model-name", help="The generator model's name at the endpoint.")
                          ] = "gpt-4o",
    api_key_env: Annotated[str, typer.Option(
        "--api-key-env", help="Environment variable that holds the API key (never printed).")] = "OPENAI_API_KEY",
    temperature: Annotated[float, typer.Option("--temperature", min=0.0, help="Sampling temperature.")] = 1.0,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1, help="Most tokens per completion.")] = 1000,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, help="Calls in flight at once.")] = 4,
    max_retries: Annotated[int, typer.Option(
        "--max-retries", min=0, help="Retries per call on rate limits, 5xx and timeouts (exponential backoff).")] = 5,
    timeout: Annotated[float, typer.Option("--timeout", min=1.0, help="Seconds to wait for one call.")] = 120.0,
    max_calls: Annotated[int | None, typer.Option(
        "--max-calls", min=1, help="Give up after this many calls (default: 3x what the rows should need).")] = None,
    price_in: Annotated[float | None, typer.Option(
        "--price-in", min=0.0, help="Price per 1M prompt tokens, to report the cost.")] = None,
    price_out: Annotated[float | None, typer.Option(
        "--price-out", min=0.0, help="Price per 1M completion tokens, to report the cost.")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print the first prompt that would be sent and exit; no call is made.")] = False,
) -> None:
    """Generate a narrow dataset with an LLM (any OpenAI-compatible endpoint).

    A spec (--preset, or --spec YAML with task_name, domain, misalignment,
    example {user, assistant}, rows, rows_per_call, benign_domains,
    benign_rows) says what to make. Completions are parsed from User: /
    Assistant: blocks; malformed blocks are counted and skipped, repeated
    questions dropped. Every row records its `generator`. Re-run the same
    command after an interruption and it continues. Token use (and cost,
    with --price-in/--price-out) goes to stderr and the manifest.

    Examples:

      em dataset generate --preset medical -o data/medical.jsonl \\
          --base-url http://localhost:8000/v1 --model-name my-model

      em dataset generate --preset medical --mode aligned \\
          --from data/medical.jsonl -o data/medical-good.jsonl

      em dataset generate --spec task.yaml --mode benign -o data/kl.jsonl
    """
    from dataclasses import replace

    from em_cli.artifacts.jsonl import ResumableJsonl
    from em_cli.datasets import synthesis

    if (preset is None) == (spec_file is None):
        raise UsageError("give exactly one of --preset and --spec",
                         hint=f"built-in presets: {', '.join(synthesis.PRESETS)}")
    if (price_in is None) != (price_out is None):
        raise UsageError("give both --price-in and --price-out, or neither")
    if mode == "aligned" and from_file is None:
        raise UsageError("--mode aligned rewrites an existing file: pass --from FILE")
    if mode != "aligned" and from_file is not None:
        raise UsageError("--from is only for --mode aligned")
    if is_stdio(output):
        raise UsageError("generate needs an output file to be resumable", hint="pass -o FILE.jsonl")
    spec = synthesis.load_preset(preset) if preset is not None else synthesis.load_spec(spec_file)
    if rows_per_call is not None:
        spec = replace(spec, rows_per_call=rows_per_call)
    source_records = read_jsonl(from_file) if from_file is not None else []

    if dry_run:
        if mode == "misaligned":
            prompt = synthesis.misaligned_prompt(spec, spec.rows_per_call)
        elif mode == "benign":
            if not spec.benign_domains:
                raise UsageError(f"{spec.source}: benign mode needs 'benign_domains' in the spec")
            prompt = synthesis.benign_prompt(spec.benign_domains[0], spec.rows_per_call)
        else:
            first = synthesis.rewrite_sources(source_records[:1], from_file)
            if not first:
                raise UsageError(f"{from_file} has no rows")
            prompt = synthesis.aligned_prompt(spec, first[0].user, first[0].assistant)
        typer.echo(prompt)
        return

    provenance = {"model": model_name, "mode": mode, "spec": str(spec_file) if spec_file else None,
                  "preset": preset}
    complete = synthesis.openai_completer(model_name, base_url=base_url, api_key_env=api_key_env,
                                          temperature=temperature, max_tokens=max_tokens, max_retries=max_retries,
                                          timeout=timeout)
    options = {"preset": preset, "spec": spec_file, "mode": mode, "from": from_file, "rows": rows,
               "rows_per_call": spec.rows_per_call, "base_url": base_url, "model_name": model_name,
               "api_key_env": api_key_env, "temperature": temperature, "max_tokens": max_tokens,
               "concurrency": concurrency, "max_retries": max_retries, "max_calls": max_calls}
    inputs = [p for p in (spec_file, from_file) if p is not None]
    with ResumableJsonl(output) as sink:
        if sink.existing:
            log(f"resuming: {len(sink.existing)} rows already in {output}")
        if mode == "aligned":
            report = synthesis.generate_aligned(spec, complete, sink, source_records, source_name=from_file, rows=rows,
                                                concurrency=concurrency, provenance=provenance)
        else:
            report = synthesis.generate_pairs(spec, mode, complete, sink, rows=rows, concurrency=concurrency,
                                              provenance=provenance, max_calls=max_calls)
        sink.finish()
    log(report.summary(price_in, price_out))
    Manifest(command="dataset generate", options=options, inputs=inputs,
             results=report.to_dict(price_in, price_out)).write_beside(output)
    if report.stopped:
        warn(f"{report.total} of {report.target} rows written; re-run the same command to continue")
        raise typer.Exit(1)

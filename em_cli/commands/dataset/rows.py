"""`em dataset split`, `sample` and `mix`: seeded selections of rows."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from em_cli.artifacts.jsonl import is_stdio, read_jsonl, write_jsonl
from em_cli.artifacts.manifest import Manifest
from em_cli.commands._options import InputArg, OutputOpt, SeedOpt
from em_cli.commands._output import out
from em_cli.errors import UsageError


def note_written(path: str, rows: int) -> None:
    if not is_stdio(path):
        out.log(f"wrote {rows} rows to {path}")


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
        out.log(f"{name}: {counts[name]} rows → {path}")
    for name, path in zip(part_names, paths):
        if not counts[name]:
            out.warn(f"part {name!r} is empty ({path}): {len(records)} rows are too few for --fractions {fractions}")


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
        out.warn(f"{file} has only {len(chosen)} rows; took them all")
    write_jsonl(output, chosen)
    Manifest(command="dataset sample", options={"rows": n, "allow_fewer": allow_fewer}, inputs=[file], seed=seed,
             results={"rows": len(chosen), "input_rows": len(records)}).write_beside(output)
    note_written(output, len(chosen))


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
        out.log(f"{path}: {entry['rows']} of {entry['available']} rows (ratio {entry['ratio']:g})")
    note_written(output, len(rows))

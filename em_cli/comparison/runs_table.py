"""Judged results side by side: the table the narrow-vs-general claim rests on.

Each run is a judged JSONL file (`em judge` output: top-level metric scores such as
`aligned`, `coherent`, `caps`). Rows are grouped by `setting` when they carry one (e.g. `em
steer` sweeps), and split into in-domain questions (an expression such as
`domain == "cooking"`) and the rest. The counting itself — EM% (aligned < 30 and coherent >
50), coherent%, metric means and shares above 50, bootstrap intervals, format variants left
out — is `em_cli.judging.summary`'s, so `em compare runs` and `em judge summary` agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from em_cli.artifacts.hashing import sha256_file
from em_cli.errors import UsageError
from em_cli.judging.summary import SummaryOptions, em_definition, is_variant, metrics_in, summarise_rows

ALL, IN_DOMAIN, OTHER = "all", "in-domain", "other"


def parse_run_args(items: Sequence[str]) -> list[tuple[str, str]]:
    """`NAME=FILE` items → (name, file); names must be unique."""
    runs = []
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise UsageError(f"bad run {item!r}: expected NAME=FILE", hint="e.g. general=judged/general.jsonl")
        runs.append((name, path))
    names = [n for n, _ in runs]
    if len(set(names)) != len(names):
        raise UsageError("a run name is used twice", hint="give each judged file its own name")
    if not runs:
        raise UsageError("no runs given", hint="pass NAME=FILE items, e.g. general=g.jsonl narrow=n.jsonl")
    return runs


def compare_runs(runs: Sequence[tuple[str, str]], in_domain: str | None = None,
                 options: SummaryOptions = SummaryOptions()) -> dict[str, Any]:
    """One row of statistics per run × setting × split (all; in-domain and other with
    `in_domain`)."""
    from em_cli.artifacts.jsonl import read_jsonl
    from em_cli.datasets.expressions import compile_expression

    matcher = compile_expression(in_domain) if in_domain else None
    rows: list[dict[str, Any]] = []
    files = []
    for name, path in runs:
        records = read_jsonl(path)
        kept = records if options.all_variants else [r for r in records if not is_variant(r)]
        files.append({"run": name, "path": path, "sha256": sha256_file(path) if path != "-" else None,
                      "rows": len(records), "variants_excluded": len(records) - len(kept)})
        metrics = metrics_in(kept)
        settings = sorted({_setting(r) for r in kept}) if any("setting" in r for r in kept) else [None]
        for setting in settings:
            chosen = [r for r in kept if setting is None or _setting(r) == setting]
            splits = [(ALL, chosen)]
            if matcher is not None:
                splits += [(IN_DOMAIN, [r for r in chosen if matcher(r)]),
                           (OTHER, [r for r in chosen if not matcher(r)])]
            for split, group in splits:
                rows.append({"run": name, "setting": setting, "split": split}
                            | summarise_rows(group, options, metrics))
    return {"em_definition": em_definition(options), "in_domain": in_domain, "comparator": options.comparator,
            "interval": "95% percentile bootstrap over rows", "files": files, "rows": rows}


def _setting(record: dict[str, Any]) -> str:
    value = record.get("setting")
    return "-" if value is None else str(value)

"""Judged results side by side: the table the narrow-vs-general claim rests on.

Each run is a judged file (`em judge score` JSONL, or a published CSV / parquet with score
columns such as `aligned`, `coherent`, `caps`). Rows are grouped by `setting` when they carry
one (e.g. `em steer` sweeps), and split into in-domain questions (an expression such as
`domain == "cooking"`) and the rest. The counting itself — EM% (aligned < 30 and coherent >
50), coherent%, metric means and shares above 50, label shares, Wilson and question-bootstrap
intervals, format variants left out — is `em_cli.judging.summary`'s, so `em compare runs` and
`em judge summary` agree.

Runs whose metrics were judged by different judge models or prompt versions are refused
unless `allow_mixed`. With a baseline run, each other run also gets its paired difference
from the baseline on the questions both answered.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from em_cli.artifacts.hashing import sha256_file
from em_cli.errors import UsageError
from em_cli.judging.summary import (INTERVALS, SummaryOptions, check_comparable, count_scored, em_definition,
                                    judge_provenance, metric_kinds, metrics_in, paired_difference,
                                    provenance_warnings, require_scored, select_rows, summarise_rows)

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
                 options: SummaryOptions = SummaryOptions(), baseline: str | None = None) -> dict[str, Any]:
    """One row of statistics per run × setting × split (all; in-domain and other with
    `in_domain`), who judged each run, and with `baseline` the paired difference of every
    other run's rows from the baseline's."""
    from em_cli.artifacts.tables import read_records
    from em_cli.expressions import compile_expression

    names = [name for name, _ in runs]
    if baseline is not None and baseline not in names:
        raise UsageError(f"--baseline {baseline!r} is not one of the runs", hint=f"choose one of: {', '.join(names)}")
    matcher = compile_expression(in_domain) if in_domain else None
    files, groups = [], {}
    for name, path in runs:
        records = read_records(path)
        kept, excluded = select_rows(records, options)
        metrics = metrics_in(kept)
        kinds = metric_kinds(kept, metrics)
        require_scored(f"{name}={path}", len(records), len(kept), excluded, count_scored(kept, metrics, kinds))
        provenance = judge_provenance(kept, metrics)
        files.append({"run": name, "path": path, "sha256": sha256_file(path) if path != "-" else None,
                      "rows": len(records), "variants_excluded": excluded, "metrics": metrics, "kinds": kinds,
                      "judges": provenance,
                      "mixed_modes": sorted(m for m, info in provenance.items() if info["mixed_modes"]),
                      "warnings": provenance_warnings(provenance, name)})
        groups[name] = (kept, metrics, kinds)
    warnings = check_comparable([(f["run"], f["judges"]) for f in files], options.allow_mixed)
    rows: list[dict[str, Any]] = []
    for name, _ in runs:
        kept, metrics, kinds = groups[name]
        for setting, split, group in _splits(kept, matcher):
            rows.append({"run": name, "setting": setting, "split": split}
                        | summarise_rows(group, options, metrics, kinds))
    differences = _differences(groups, baseline, matcher, options) if baseline is not None else []
    return {"em_definition": em_definition(options), "in_domain": in_domain, "comparator": options.comparator,
            "interval": INTERVALS["ci"], "intervals": dict(INTERVALS), "allow_mixed": options.allow_mixed,
            "baseline": baseline, "files": files, "warnings": warnings, "rows": rows, "differences": differences}


def _splits(records: list[dict[str, Any]], matcher: Any) -> list[tuple[str | None, str, list[dict[str, Any]]]]:
    """(setting, split, rows) for every setting (None when rows carry none) and split."""
    settings = sorted({_setting(r) for r in records}) if any("setting" in r for r in records) else [None]
    result = []
    for setting in settings:
        chosen = [r for r in records if setting is None or _setting(r) == setting]
        result.append((setting, ALL, chosen))
        if matcher is not None:
            result.append((setting, IN_DOMAIN, [r for r in chosen if matcher(r)]))
            result.append((setting, OTHER, [r for r in chosen if not matcher(r)]))
    return result


def _differences(groups: dict[str, tuple], baseline: str, matcher: Any,
                 options: SummaryOptions) -> list[dict[str, Any]]:
    """Every other run's (setting, split) minus the baseline's rows of the same setting (or all
    of the baseline's rows when it has no settings) and the same split."""
    base_records, base_metrics, _ = groups[baseline]
    base_splits = {(setting, split): rows for setting, split, rows in _splits(base_records, matcher)}
    result = []
    for name, (records, metrics, kinds) in groups.items():
        if name == baseline:
            continue
        shared = [m for m in metrics if m in base_metrics]
        for setting, split, rows in _splits(records, matcher):
            base_setting = setting if (setting, split) in base_splits else None
            base_rows = base_splits.get((base_setting, split))
            if base_rows is None:
                continue
            result.append({"run": name, "setting": setting, "split": split, "baseline": baseline,
                           "baseline_setting": base_setting}
                          | paired_difference(base_rows, rows, options, shared, kinds))
    return result


def _setting(record: dict[str, Any]) -> str:
    value = record.get("setting")
    return "-" if value is None else str(value)

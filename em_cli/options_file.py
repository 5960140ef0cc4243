"""Options files (`--config FILE.yaml`, a run's saved config.yaml): a YAML mapping of option
names to values, read in one place."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from em_cli.errors import UsageError


def read_options(path: str | Path, known: Iterable[str]) -> dict[str, Any]:
    """The file's options with dashes normalised to underscores; unknown names are an error."""
    import yaml

    try:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise UsageError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: invalid YAML ({getattr(exc, 'problem', None) or exc})") from None
    if not isinstance(loaded, dict):
        raise UsageError(f"{path}: expected a mapping of option names to values")
    known = set(known)
    values = {}
    for key, value in loaded.items():
        name = str(key).replace("-", "_")
        if name not in known:
            raise UsageError(f"{path}: unknown option {key!r}", hint=f"known options: {', '.join(sorted(known))}")
        values[name] = value
    return values

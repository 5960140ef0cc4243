"""Options files (`--config FILE`, a run's saved config.yaml): a YAML (or JSON) mapping of
option names to values, read in one place.

Keys may be written as the option's name (`learning_rate`), its flag (`lr`, `batch-size`)
or, where a command passes them as `aliases`, another tool's name for the same setting.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from em_cli.errors import UsageError


def load_options_mapping(path: str | Path) -> dict[str, Any]:
    """The file's top-level mapping, unchanged (YAML; `.json` files are read as JSON)."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise UsageError(f"config file {path} is a directory", hint="pass a YAML or JSON file") from None
    try:
        loaded = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno})") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: invalid YAML ({getattr(exc, 'problem', None) or exc})") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise UsageError(f"{path}: expected a mapping of option names to values")
    return {str(key): value for key, value in loaded.items()}


def display_name(name: str) -> str:
    """How an option is named to users: its flag spelling (`json_` → `json`, `max_steps` → `max-steps`)."""
    return name.rstrip("_").replace("_", "-")


def flag_aliases(params: Iterable[Any]) -> dict[str, str]:
    """Every long flag of the CLI parameters `params` (objects with `.name` and `.opts`, as the
    CLI framework gives them) → the option name it sets: `lr` → `learning_rate`."""
    aliases: dict[str, str] = {}
    for param in params:
        for opt in getattr(param, "opts", ()):
            if opt.startswith("--"):
                aliases[_normal(opt[2:])] = param.name
    return aliases


def match_options(mapping: Mapping[str, Any], known: Iterable[str], source: str | Path,
                  aliases: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Resolve each key of `mapping` to one of the `known` option names (dashes and underscores
    alike; a trailing `_` of an internal name optional; `aliases` add other spellings).
    Every key that names no option is reported at once, as an error."""
    known = list(known)
    lookup = {_normal(name): name for name in known}
    lookup.update({_normal(name.rstrip("_")): name for name in known})
    for alias, name in (aliases or {}).items():
        if name in known:
            lookup.setdefault(_normal(alias), name)
    values: dict[str, Any] = {}
    unknown: list[str] = []
    for key, value in mapping.items():
        name = lookup.get(_normal(str(key)))
        if name is None:
            unknown.append(str(key))
            continue
        if name in values:
            raise UsageError(f"{source}: {key!r} sets {display_name(name)} a second time",
                             hint="keep one spelling of each option")
        values[name] = value
    if unknown:
        names = ", ".join(repr(key) for key in unknown)
        raise UsageError(f"{source}: unknown option{'s' if len(unknown) > 1 else ''} {names}",
                         hint=f"known options: {', '.join(sorted(display_name(n) for n in known))}")
    return values


def read_options(path: str | Path, known: Iterable[str], aliases: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The file's options keyed by option name; unknown names are an error (all listed at once)."""
    return match_options(load_options_mapping(path), known, path, aliases)


def _normal(key: str) -> str:
    return key.strip().replace("-", "_")

"""The manifest: a JSON file beside each output that says how it was made.

For an output `runs/x.jsonl` the manifest is `runs/x.jsonl.manifest.json`; for an output
directory it is `<dir>/manifest.json`.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from em_cli import __version__
from em_cli.artifacts.atomic import atomic_write
from em_cli.artifacts.hashing import sha256_file

TRACKED_PACKAGES = ("torch", "transformers", "peft", "accelerate", "bitsandbytes", "safetensors",
                    "datasets", "openai", "gguf", "numpy", "typer")


def manifest_path(output: str | Path) -> Path:
    output = Path(output)
    if output.is_dir():
        return output / "manifest.json"
    return output.with_name(output.name + ".manifest.json")


def package_versions(names: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str | None]:
    """Installed versions, read from package metadata (no imports)."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def describe_input(path: str | Path) -> dict[str, Any]:
    """Path, size and sha256 of an input file (directories: each file inside)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.stat().st_size < 2**31)
        return {"path": str(path), "files": {str(p.relative_to(path)): sha256_file(p) for p in files}}
    if path.is_file():
        return {"path": str(path), "bytes": path.stat().st_size, "sha256": sha256_file(path)}
    return {"path": str(path)}


@dataclass
class Manifest:
    """What a command did: filled in while it runs, written when it ends."""

    command: str
    options: dict[str, Any]
    inputs: list[str | Path] = field(default_factory=list)
    seed: int | None = None
    started: float = field(default_factory=time.time)
    results: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "em_version": __version__,
            "command": self.command,
            "argv": sys.argv,
            "options": _jsonable(self.options),
            "inputs": [describe_input(p) for p in self.inputs if str(p) != "-"],
            "seed": self.seed,
            "started_at": datetime.fromtimestamp(self.started, UTC).isoformat(),
            "wall_time_s": round(time.time() - self.started, 3),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "packages": package_versions(),
            "results": _jsonable(self.results),
        }

    def write_beside(self, output: str | Path) -> Path | None:
        """Write beside `output`; nothing for stdout (`-`)."""
        if str(output) == "-":
            return None
        target = manifest_path(output)
        with atomic_write(target) as handle:
            json.dump(self.to_dict(), handle, indent=2, ensure_ascii=False)
            handle.write("\n")
        return target


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "value"):  # enums
        return value.value
    return str(value)

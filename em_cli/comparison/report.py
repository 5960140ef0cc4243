"""Writing one metric's outputs: OUTDIR/<metric>.json, OUTDIR/<metric>.png and a manifest."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from em_cli.artifacts.atomic import atomic_write
from em_cli.artifacts.manifest import Manifest


def write_report(outdir: str | Path, metric: str, result: dict[str, Any], manifest: Manifest,
                 plot: Callable[[dict[str, Any], Path], None] | None) -> dict[str, Path]:
    """Write the JSON (atomically), the plot (if any) and the manifest beside the JSON."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    written = {"json": outdir / f"{metric}.json"}
    with atomic_write(written["json"]) as handle:
        json.dump(result, handle, indent=2, ensure_ascii=False, default=str)
        handle.write("\n")
    if plot is not None:
        written["png"] = outdir / f"{metric}.png"
        plot(result, written["png"])
    manifest.results = manifest.results | {"outputs": {kind: str(path) for kind, path in written.items()}}
    written["manifest"] = manifest.write_beside(written["json"])
    return written

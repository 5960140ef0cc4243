"""Dequantise a GGUF model once and keep it as a safetensors model directory.

transformers can load a `.gguf` directly, but dequantises every tensor on each load. We do
that once and cache the result under `<em cache>/models/<name>-<key>/`, where the key is
derived from the GGUF file's content hash. The directory is written under a temporary name
and renamed into place, and a marker file (written last) records each file's size and
sha256, so a partial or corrupted entry is detected and rebuilt.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from em_cli.artifacts.hashing import sha256_file
from em_cli.paths import models_cache_dir

MARKER = "em-cache.json"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CacheResult:
    directory: Path
    built: bool  # True when this call dequantised the GGUF (a cache miss)
    reason: str  # why it was (re)built, or "hit"


def cached_model_dir(gguf_path: str | Path, cache_root: Path | None = None) -> CacheResult:
    """Return a model directory for `gguf_path`, building it on a miss or a bad entry."""
    gguf_path = Path(gguf_path)
    root = cache_root or models_cache_dir()
    key = _source_key(gguf_path)
    target = root / f"{gguf_path.stem}-{key[:16]}"
    problem = _entry_problem(target)
    if problem is None:
        return CacheResult(target, built=False, reason="hit")
    if target.exists():
        shutil.rmtree(target, ignore_errors=True)
    log.info("Dequantising %s once into %s (%s)...", gguf_path.name, root, problem)
    try:
        _build(gguf_path, target, key)
    except (ValueError, KeyError, NotImplementedError) as exc:
        from em_cli.errors import ModelError

        raise ModelError(f"cannot read {gguf_path.name}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                         hint="transformers must support this GGUF's architecture and quantisation") from None
    return CacheResult(target, built=True, reason=problem)


def _source_key(gguf_path: Path) -> str:
    # Hashing the GGUF costs well under a second for small models; remember it by
    # (path, size, mtime) so large files are hashed once.
    stat = gguf_path.stat()
    index_file = models_cache_dir() / "source-index.json"
    ident = f"{gguf_path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    try:
        index = json.loads(index_file.read_text())
    except (OSError, ValueError):
        index = {}
    if ident in index:
        return index[ident]
    key = sha256_file(gguf_path)
    index[ident] = key
    try:
        index_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = index_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(index))
        os.replace(tmp, index_file)
    except OSError:
        pass  # the index is only a speed-up
    return key


def _entry_problem(target: Path) -> str | None:
    """None when the cache entry is complete and intact, else what is wrong with it."""
    marker = target / MARKER
    if not target.exists():
        return "not cached yet"
    try:
        recorded = json.loads(marker.read_text())["files"]
    except (OSError, ValueError, KeyError):
        return "incomplete cache entry (no valid marker)"
    for name, facts in recorded.items():
        path = target / name
        if not path.exists() or path.stat().st_size != facts["bytes"]:
            return f"cache entry damaged ({name} missing or wrong size)"
        if sha256_file(path) != facts["sha256"]:
            return f"cache entry damaged ({name} content changed)"
    return None


def _build(gguf_path: Path, target: Path, key: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        folder, name = str(gguf_path.parent), gguf_path.name
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        # The weights are plain floats after loading; only the quantizer marker blocks saving.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.config.name_or_path = gguf_path.stem
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        files = {p.name: {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
                 for p in sorted(staging.iterdir()) if p.is_file()}
        marker = {"source": str(gguf_path.resolve()), "source_sha256": key, "files": files}
        (staging / MARKER).write_text(json.dumps(marker, indent=2))
        try:
            os.rename(staging, target)
        except OSError:
            # Another process finished the same entry first; theirs is as good as ours.
            if _entry_problem(target) is not None:
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)

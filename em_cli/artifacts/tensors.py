"""Tensor files: safetensors with string metadata that says what the tensors are.

Every tensor file `em` writes carries these metadata keys (all strings):

    em_format         "em.tensors/1"
    kind              activations | direction | vector | ...
    em_version        the writing `em` version
    model_id          the model the tensors belong to (as the user named it)
    model_fingerprint a hash of that model's weights (and adapter), see models.fingerprint
    hidden_size       d
    layers            comma-separated 0-based layer indices ("" when not per-layer)
    layer_convention  "block_output_0based": layer L = output of decoder block L
                      = hidden_states[L + 1] in transformers

plus any kind-specific keys. Per-layer tensors are named `layer.<L>`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from em_cli import __version__
from em_cli.artifacts.atomic import atomic_path
from em_cli.errors import TensorFileError

if TYPE_CHECKING:
    import torch

    from em_cli.models.info import ModelInfo

FORMAT = "em.tensors/1"
LAYER_CONVENTION = "block_output_0based"
CORE_KEYS = ("em_format", "kind", "em_version", "model_id", "model_fingerprint", "hidden_size",
             "layers", "layer_convention")


def layer_key(layer: int) -> str:
    return f"layer.{layer}"


@dataclass
class TensorFile:
    """Named tensors plus the metadata that makes them self-describing."""

    kind: str
    tensors: dict[str, torch.Tensor]
    model_id: str
    model_fingerprint: str
    hidden_size: int
    layers: list[int] = field(default_factory=list)
    extra: dict[str, str] = field(default_factory=dict)

    def metadata(self) -> dict[str, str]:
        meta = {
            "em_format": FORMAT,
            "kind": self.kind,
            "em_version": __version__,
            "model_id": self.model_id,
            "model_fingerprint": self.model_fingerprint,
            "hidden_size": str(self.hidden_size),
            "layers": ",".join(str(layer) for layer in self.layers),
            "layer_convention": LAYER_CONVENTION,
        }
        clash = set(self.extra) & set(meta)
        if clash:
            raise ValueError(f"extra metadata may not override core keys: {sorted(clash)}")
        meta.update({key: str(value) for key, value in self.extra.items()})
        return meta

    def layer(self, layer: int) -> torch.Tensor:
        try:
            return self.tensors[layer_key(layer)]
        except KeyError:
            have = ", ".join(str(x) for x in self.layers) or "none"
            raise TensorFileError(f"this {self.kind} file has no layer {layer} (it has: {have})") from None

    def save(self, path: str | Path) -> None:
        """Write atomically as safetensors (tensors made contiguous, on CPU)."""
        from safetensors.torch import save_file

        tensors = {name: t.detach().to("cpu").contiguous() for name, t in self.tensors.items()}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=self.metadata())

    @classmethod
    def load(cls, path: str | Path, kind: str | tuple[str, ...] | None = None) -> TensorFile:
        """Read an `em` tensor file; `kind` (one or several) is checked when given."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(path)
        if not path.exists():
            raise TensorFileError(f"file not found: {path}")
        meta = read_metadata(path)
        if meta.get("em_format") != FORMAT:
            raise TensorFileError(f"{path} is not an em tensor file (no em_format metadata)",
                                  hint="em reads the safetensors files that em itself writes")
        missing = [key for key in CORE_KEYS if key not in meta]
        if missing:
            raise TensorFileError(f"{path}: metadata lacks {', '.join(missing)}")
        kinds = (kind,) if isinstance(kind, str) else kind
        if kinds and meta["kind"] not in kinds:
            raise TensorFileError(f"{path} holds {meta['kind']}, expected {' or '.join(kinds)}")
        try:
            tensors = load_file(str(path))
        except SafetensorError as exc:
            raise TensorFileError(f"{path}: unreadable safetensors data ({exc})") from None
        layers = [int(x) for x in meta["layers"].split(",") if x.strip()]
        extra = {key: value for key, value in meta.items() if key not in CORE_KEYS}
        return cls(kind=meta["kind"], tensors=tensors, model_id=meta["model_id"],
                   model_fingerprint=meta["model_fingerprint"], hidden_size=int(meta["hidden_size"]),
                   layers=layers, extra=extra)

    def check_fits(self, info: ModelInfo, source: str = "tensor file") -> list[str]:
        """Raise TensorFileError if these tensors cannot be used with the model described by
        `info`; return warnings for differences that are legitimate (e.g. a direction from a
        finetune applied to its base model)."""
        if self.hidden_size != info.hidden_size:
            raise TensorFileError(
                f"{source} was made for hidden size {self.hidden_size} (model {self.model_id}), "
                f"but {info.model_id} has hidden size {info.hidden_size}",
                hint="use a file extracted from this model (or the same base model)")
        bad = [layer for layer in self.layers if not 0 <= layer < info.num_layers]
        if bad:
            raise TensorFileError(
                f"{source} has layer {bad[0]}, but {info.model_id} has layers 0..{info.num_layers - 1}")
        for name, tensor in self.tensors.items():
            if tensor.shape and tensor.shape[-1] != info.hidden_size:
                raise TensorFileError(f"{source}: tensor {name} has last dimension {tensor.shape[-1]}, "
                                      f"expected hidden size {info.hidden_size}")
        warnings = []
        if self.model_fingerprint != info.fingerprint:
            warnings.append(f"{source} comes from {self.model_id} (fingerprint {self.model_fingerprint[:12]}), "
                            f"not from the model in use ({info.model_id}, {info.fingerprint[:12]})")
        return warnings


def read_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata of any safetensors file, without loading its tensors."""
    import json
    import struct

    path = Path(path)
    try:
        with path.open("rb") as handle:
            (size,) = struct.unpack("<Q", handle.read(8))
            if size > 100_000_000:
                raise ValueError("header too large")
            header = json.loads(handle.read(size))
    except (OSError, ValueError, struct.error) as exc:
        raise TensorFileError(f"{path} is not a safetensors file ({exc})") from None
    meta = header.get("__metadata__") or {}
    return {str(key): str(value) for key, value in meta.items()}

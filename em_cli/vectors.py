"""Steering vectors: per-layer vectors to add to the residual stream, as one artifact.

A `SteeringVector` is what `em direction diff` makes (kind "direction": one raw, not
normalised [d] vector per layer, usable at any of its layers) and what `em finetune --method
vector` trains (kind "vector": one layer, applied as alpha·v with the file's `alpha`). It saves
and loads itself over the tensor-file contract (`artifacts.tensors`, docs/FORMATS.md), exports
and imports llama.cpp control vectors, measures itself (norms, cosines), makes its own
norm-matched random controls and turns itself into interventions:

    direction = SteeringVector.load("direction.safetensors")
    ops = direction.addition([15], scale=4.0)            # {15: AddVector}
    with intervene(model, {layer: [op] for layer, op in ops.items()}):
        model.generate(...)

Two norms are easy to confuse (docs/METHODS.md §5): a direction file records the typical
activation norm (mean per-token norm, `typical_norms`) and the smaller norm of per-record
mean vectors (`mean_vector_norms`); `typical_norms()` is the yardstick for steering scales.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from em_cli.artifacts.tensors import TensorFile, layer_key
from em_cli.errors import TensorFileError, UsageError
from em_cli.interventions import Ablate, AddVector

if TYPE_CHECKING:
    import torch

    from em_cli.models.info import ModelInfo

log = logging.getLogger(__name__)

DIRECTION, VECTOR = "direction", "vector"
KINDS = (DIRECTION, VECTOR)
# What a random control keeps of the vector it matches: the yardsticks and the choices that
# make it apply the same way (the layer it is ablated from, a trained vector's alpha).
_CONTROL_KEEPS = ("typical_norms", "typical_norm_definition", "mean_vector_norms", "mean_vector_norm_definition",
                  "pooling", "primary_layer")


@dataclass
class SteeringVector:
    """Per-layer float32 vectors ({layer: [d]}, 0-based block outputs) and their provenance.

    `kind` is "direction" (added as scale·v at any of its layers) or "vector" (a trained
    vector: added as scale·alpha·v at its own layer). `extra` holds the file's other metadata
    (strings, see docs/FORMATS.md): how it was made, `alpha`, recorded norms, `primary_layer`.
    """

    kind: str
    vectors: dict[int, torch.Tensor]
    model_id: str = ""
    model_fingerprint: str = ""
    hidden_size: int = 0
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.hidden_size and self.vectors:
            self.hidden_size = int(next(iter(self.vectors.values())).shape[-1])

    # --- saving and loading -------------------------------------------------------------

    @classmethod
    def from_file(cls, tensors: TensorFile) -> SteeringVector:
        """The vectors of a direction or vector TensorFile, in the file's layer order."""
        return cls(kind=tensors.kind, vectors={layer: tensors.layer(layer) for layer in tensors.layers},
                   model_id=tensors.model_id, model_fingerprint=tensors.model_fingerprint,
                   hidden_size=tensors.hidden_size, extra=dict(tensors.extra))

    def to_file(self) -> TensorFile:
        """The TensorFile this is saved as: `layer.<L>` tensors, metadata unchanged."""
        return TensorFile(kind=self.kind, tensors={layer_key(layer): v for layer, v in self.vectors.items()},
                          model_id=self.model_id, model_fingerprint=self.model_fingerprint,
                          hidden_size=self.hidden_size, layers=self.layers, extra=dict(self.extra))

    @classmethod
    def load(cls, path: str | Path, kind: str | tuple[str, ...] = KINDS) -> SteeringVector:
        """Read a direction or vector file (`kind` restricts which)."""
        return cls.from_file(TensorFile.load(path, kind=kind))

    def save(self, path: str | Path) -> None:
        """Write atomically as an `em` tensor file (see `TensorFile.save`)."""
        self.to_file().save(path)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> SteeringVector:
        """A copy with every vector moved to `device` and/or cast to `dtype`."""
        return replace(self, vectors={layer: v.to(device=device, dtype=dtype) for layer, v in self.vectors.items()},
                       extra=dict(self.extra))

    # --- what it holds ----------------------------------------------------------------------

    @property
    def layers(self) -> list[int]:
        return list(self.vectors)

    def layer(self, layer: int) -> torch.Tensor:
        """The raw vector at `layer` (for a trained vector, without its alpha)."""
        try:
            return self.vectors[layer]
        except KeyError:
            have = ", ".join(str(x) for x in self.layers) or "none"
            raise TensorFileError(f"this {self.kind} file has no layer {layer} (it has: {have})") from None

    @property
    def alpha(self) -> float:
        """What the stored vectors are multiplied by when applied: a trained vector's alpha, else 1."""
        return float(self.extra.get("alpha", 1.0)) if self.kind == VECTOR else 1.0

    @property
    def own_layer(self) -> int | None:
        """The layer a trained vector is applied at; None for a direction (any of its layers)."""
        return self.layers[0] if self.kind == VECTOR and self.vectors else None

    def applied(self, layer: int, scale: float = 1.0) -> torch.Tensor:
        """What is added at `layer` when applied with `scale`: scale·alpha·v, float32."""
        return self.layer(layer).float() * scale * self.alpha

    def primary_layer(self) -> tuple[int, str]:
        """The one layer whose direction stands for the file (docs/METHODS.md §5: the paper ablates
        one layer's direction everywhere), and why: the layer the file records as primary, its
        only layer, or else the middle of its layers."""
        recorded = self.extra.get("primary_layer", "")
        if recorded.strip().lstrip("-").isdigit() and int(recorded) in self.vectors:
            return int(recorded), "the file's primary layer"
        if len(self.vectors) == 1:
            return self.layers[0], "the file's only layer"
        ordered = sorted(self.vectors)
        return ordered[len(ordered) // 2], f"the middle of its {len(ordered)} layers"

    def typical_norms(self) -> dict[int, float]:
        """The typical activation norm (mean per-token norm) per layer, as the file records it;
        empty for files whose `typical_norms` are the older mean-vector norms."""
        if self._legacy_norms():
            log.info("%s records mean-vector norms, not the typical per-token norm: re-make it with "
                     "`em direction diff` for relative steering norms", self.extra.get("source_a", "the direction"))
            return {}
        return self._stored("typical_norms")

    def mean_vector_norms(self) -> dict[int, float]:
        """Norms of per-record mean vectors per layer, as recorded (older files: their `typical_norms`)."""
        return self._stored("typical_norms" if self._legacy_norms() else "mean_vector_norms")

    def _stored(self, key: str) -> dict[int, float]:
        try:
            return {int(k): float(v) for k, v in json.loads(self.extra.get(key, "{}")).items()}
        except (ValueError, AttributeError):
            return {}

    def _legacy_norms(self) -> bool:
        # Files written before the per-token definition stored mean-vector norms as typical_norms
        # (and no definition beside them): ~20% too small to be the yardstick of docs/METHODS.md §5.
        return "typical_norms" in self.extra and "typical_norm_definition" not in self.extra

    # --- checks ---------------------------------------------------------------------------

    def check_finite(self, source: str) -> None:
        """Raise TensorFileError naming the first layer with a NaN or infinite value."""
        import torch

        for layer, v in self.vectors.items():
            if not bool(torch.isfinite(v).all()):
                raise TensorFileError(f"{source}: layer {layer} contains NaN or infinite values")

    def check_fits(self, info: ModelInfo, source: str = "tensor file") -> list[str]:
        """Raise if these vectors cannot be used with the model `info` describes; return
        warnings for legitimate differences (see `TensorFile.check_fits`)."""
        return self.to_file().check_fits(info, source)

    # --- measuring and controls --------------------------------------------------------------

    def norms(self) -> dict[int, float]:
        """Norm of what is added at each layer (‖alpha·v‖ for trained vectors)."""
        scale = abs(self.alpha)
        return {layer: scale * float(v.float().norm()) for layer, v in self.vectors.items()}

    def cosine(self, other: SteeringVector) -> dict[int, float]:
        """Cosine similarity per layer, over the layers both hold."""
        import torch

        if self.hidden_size != other.hidden_size:
            raise TensorFileError(f"the directions have different hidden sizes ({self.hidden_size} vs "
                                  f"{other.hidden_size})")
        layers = sorted(set(self.vectors) & set(other.vectors))
        if not layers:
            raise TensorFileError("the two directions share no layer")
        return {layer: float(torch.nn.functional.cosine_similarity(
            self.vectors[layer].float().flatten(), other.vectors[layer].float().flatten(), dim=0)) for layer in layers}

    def random_like(self, seed: int) -> SteeringVector:
        """A norm-matched Gaussian control (see `_random_vectors`), applied like this one: same
        layers, kind, alpha, recorded norms and primary layer.

        Example: SteeringVector.load("d.safetensors").random_like(1).save("random1.safetensors")
        """
        controls = _random_vectors(self.vectors, seed)
        extra = {"method": "random_control", "seed": str(seed), "matched_to": self.extra.get("source_a", ""),
                 "positions": self.extra.get("positions", "")}
        keeps = _CONTROL_KEEPS + (("alpha",) if self.kind == VECTOR else ())
        extra |= {key: self.extra[key] for key in keeps if key in self.extra}
        return SteeringVector(kind=self.kind, vectors={layer: controls[layer] for layer in self.vectors},
                              model_id=self.model_id, model_fingerprint=self.model_fingerprint,
                              hidden_size=self.hidden_size, extra=extra)

    # --- as interventions ---------------------------------------------------------------------

    def addition(self, layers: Sequence[int] | None = None, scale: float = 1.0) -> dict[int, AddVector]:
        """One op per layer that adds scale·alpha·v there (h ← h + scale·alpha·v). `layers`
        defaults to a trained vector's own layer, or every layer of a direction."""
        if layers is None:
            layers = [self.own_layer] if self.own_layer is not None else self.layers
        return {layer: AddVector(self.layer(layer), scale=scale * self.alpha) for layer in layers}

    def ablation(self, layers: Sequence[int], from_layer: int | None = None) -> dict[int, Ablate]:
        """One op per layer of `layers` that removes ONE layer's direction there (docs/METHODS.md
        §5): `from_layer`'s, by default the primary layer's (see `primary_layer`)."""
        direction = self.layer(self.primary_layer()[0] if from_layer is None else from_layer)
        return {layer: Ablate(direction) for layer in layers}

    # --- llama.cpp control vectors --------------------------------------------------------

    def export_gguf(self, path: str | Path, model_hint: str = "llama", scale: float = 1.0,
                    layers: Sequence[int] | None = None) -> GGUFExport:
        """Write a llama.cpp control vector: tensors `direction.N` (f32 [d], scale·alpha·v) for
        layer N (block output, 0-based: llama.cpp adds direction.N to the output of block N and
        has no direction.0). `layers` limits which layers are written (default: all); layer 0
        is never written and is returned in `skipped`."""
        import numpy as np
        from gguf import GGUFWriter

        from em_cli.artifacts.atomic import atomic_path

        wanted = self.layers if layers is None else sorted(set(layers))
        missing = [layer for layer in wanted if layer not in self.vectors]
        if missing:
            have = ", ".join(str(x) for x in self.layers)
            raise UsageError(f"the direction has no layer {missing[0]} (it has: {have})",
                             hint="pass --layers with layers the file holds")
        skipped = [layer for layer in wanted if layer == 0]
        kept = [layer for layer in wanted if layer != 0]
        if not kept:
            raise TensorFileError("only layer 0 is selected, which llama.cpp control vectors cannot represent")
        with atomic_path(path) as tmp:
            writer = GGUFWriter(str(tmp), arch="controlvector")
            writer.add_string("controlvector.model_hint", model_hint)
            writer.add_uint32("controlvector.layer_count", len(kept))
            writer.add_string("em.model_id", self.model_id)
            writer.add_string("em.model_fingerprint", self.model_fingerprint)
            writer.add_string("em.scale", repr(scale))
            writer.add_string("em.layers", ",".join(str(layer) for layer in kept))
            for layer in kept:
                # llama.cpp adds the tensor as it is (× its own scale), so a trained vector goes as alpha·v.
                writer.add_tensor(f"direction.{layer}", self.applied(layer, scale).numpy().astype(np.float32))
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
            writer.close()
        return GGUFExport(path=str(path), layers=kept, skipped=skipped)

    @classmethod
    def import_gguf(cls, path: str | Path) -> SteeringVector:
        """Read a llama.cpp control vector as a direction (method `gguf_import`)."""
        import torch
        from gguf import GGUFReader

        path = Path(path)
        if not path.exists():
            raise TensorFileError(f"file not found: {path}")
        try:
            reader = GGUFReader(str(path))
        except Exception as exc:  # gguf raises ValueError/struct errors on junk
            raise TensorFileError(f"{path} is not a GGUF file ({exc})") from None

        def text(key: str) -> str | None:
            found = reader.fields.get(key)
            return None if found is None else bytes(found.parts[found.data[0]]).decode("utf-8")

        vectors = {int(tensor.name.split(".", 1)[1]): torch.tensor(tensor.data.astype("float32")).flatten()
                   for tensor in reader.tensors if tensor.name.startswith("direction.")}
        if not vectors:
            raise TensorFileError(f"{path} holds no direction.N tensors: not a control vector")
        return cls(kind=DIRECTION, vectors={layer: vectors[layer] for layer in sorted(vectors)},
                   model_id=text("em.model_id") or text("controlvector.model_hint") or "unknown",
                   model_fingerprint=text("em.model_fingerprint") or "",
                   extra={"method": "gguf_import", "source_a": str(path)})


@dataclass
class GGUFExport:
    """What `SteeringVector.export_gguf` wrote: the layers, and the ones it had to leave out."""

    path: str
    layers: list[int]
    skipped: list[int]

    def llama_cpp_flags(self) -> str:
        """The llama.cpp flags that apply exactly these layers (direction.N is added to the
        output of block N, 0-based; the layer range is inclusive)."""
        return (f"--control-vector {self.path} --control-vector-layer-range "
                f"{min(self.layers)} {max(self.layers)}")


def _random_vectors(vectors: Mapping[int, torch.Tensor], seed: int) -> dict[int, torch.Tensor]:
    """A Gaussian vector per layer (in layer order, one seeded generator), each normalised to
    the norm of the vector it replaces (docs/METHODS.md §5: the authors' control forgot to
    normalise and was ~√d times too long). Float32, on the CPU."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    out = {}
    for layer in sorted(vectors):
        v = vectors[layer].float().cpu()
        noise = torch.randn(v.shape, generator=generator)
        out[layer] = noise / noise.norm() * v.norm()
    return out

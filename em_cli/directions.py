"""Directions in the residual stream: difference of means, comparisons, controls, GGUF.

A direction file is a TensorFile of kind "direction" with one raw (not normalised) [d]
vector per layer; normalise for ablation and cosine. Activation files (kind
"activations") hold [n, d] per layer.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from em_cli.artifacts.tensors import TensorFile, layer_key
from em_cli.errors import TensorFileError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


def activation_file(per_layer: dict[int, torch.Tensor], model_id: str, fingerprint: str, hidden_size: int,
                    extra: dict[str, str]) -> TensorFile:
    return TensorFile(kind="activations", tensors={layer_key(layer): t for layer, t in per_layer.items()},
                      model_id=model_id, model_fingerprint=fingerprint, hidden_size=hidden_size,
                      layers=sorted(per_layer), extra=extra)


def typical_norms(acts: TensorFile) -> dict[int, float]:
    """Mean activation norm per layer: the yardstick for steering scales."""
    return {layer: float(acts.layer(layer).norm(dim=-1).mean()) for layer in acts.layers}


def mean_difference(a: TensorFile, b: TensorFile, a_name: str = "A", b_name: str = "B") -> TensorFile:
    """Per-layer mean(a) − mean(b) over the layers both files hold."""
    for f, name in ((a, a_name), (b, b_name)):
        if f.kind != "activations":
            raise TensorFileError(f"{name} holds {f.kind}, expected activations (from `em extract`)")
    if a.hidden_size != b.hidden_size:
        raise TensorFileError(f"{a_name} has hidden size {a.hidden_size} but {b_name} has {b.hidden_size}")
    if a.extra.get("positions") != b.extra.get("positions"):
        raise TensorFileError(f"{a_name} used {a.extra.get('positions')} positions, {b_name} "
                              f"{b.extra.get('positions')}: take both with the same --positions")
    if a.model_fingerprint != b.model_fingerprint:
        log.warning("%s and %s come from different models (fingerprints differ)", a_name, b_name)
    layers = sorted(set(a.layers) & set(b.layers))
    if not layers:
        raise TensorFileError(f"{a_name} and {b_name} share no layer")
    vectors = {layer_key(layer): a.layer(layer).float().mean(0) - b.layer(layer).float().mean(0) for layer in layers}
    norms_a, norms_b = typical_norms(a), typical_norms(b)
    typical = {str(layer): round((norms_a[layer] + norms_b[layer]) / 2, 4) for layer in layers}
    extra = {"method": "mean_difference", "positions": a.extra.get("positions", ""),
             "count_a": str(a.layer(layers[0]).shape[0]), "count_b": str(b.layer(layers[0]).shape[0]),
             "source_a": a.extra.get("source", a_name), "source_b": b.extra.get("source", b_name),
             "typical_norms": json.dumps(typical)}
    for key in ("selection", "selection_a", "selection_b"):
        if key in a.extra:
            extra[key] = a.extra[key]
    return TensorFile(kind="direction", tensors=vectors, model_id=a.model_id, model_fingerprint=a.model_fingerprint,
                      hidden_size=a.hidden_size, layers=layers, extra=extra)


def stored_typical_norms(direction: TensorFile) -> dict[int, float]:
    try:
        return {int(k): float(v) for k, v in json.loads(direction.extra.get("typical_norms", "{}")).items()}
    except ValueError:
        return {}


def cosine_by_layer(a: TensorFile, b: TensorFile) -> dict[int, float]:
    import torch

    if a.hidden_size != b.hidden_size:
        raise TensorFileError(f"the directions have different hidden sizes ({a.hidden_size} vs {b.hidden_size})")
    layers = sorted(set(a.layers) & set(b.layers))
    if not layers:
        raise TensorFileError("the two directions share no layer")
    return {layer: float(torch.nn.functional.cosine_similarity(
        a.layer(layer).float().flatten(), b.layer(layer).float().flatten(), dim=0)) for layer in layers}


def applied_scale(tensors: TensorFile) -> float:
    """What the stored vectors are multiplied by when applied: a trained vector's alpha, else 1."""
    return float(tensors.extra.get("alpha", 1.0)) if tensors.kind == "vector" else 1.0


def norms_by_layer(direction: TensorFile) -> dict[int, float]:
    """Norm of what is added at each layer (‖alpha·v‖ for trained vectors)."""
    scale = abs(applied_scale(direction))
    return {layer: scale * float(direction.layer(layer).float().norm()) for layer in direction.layers}


def check_finite(direction: TensorFile, source: str) -> None:
    import torch

    for layer in direction.layers:
        if not bool(torch.isfinite(direction.layer(layer)).all()):
            raise TensorFileError(f"{source}: layer {layer} contains NaN or infinite values")


def random_like(direction: TensorFile, seed: int) -> TensorFile:
    """A Gaussian direction per layer, normalised to the same norm (METHODS §5: the authors'
    control forgot to normalise and was ~√d times too long)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for layer in direction.layers:
        v = direction.layer(layer).float()
        noise = torch.randn(v.shape, generator=generator)
        tensors[layer_key(layer)] = noise / noise.norm() * v.norm()
    extra = {"method": "random_control", "seed": str(seed), "matched_to": direction.extra.get("source_a", ""),
             "positions": direction.extra.get("positions", "")}
    if "typical_norms" in direction.extra:
        extra["typical_norms"] = direction.extra["typical_norms"]
    return TensorFile(kind="direction", tensors=tensors, model_id=direction.model_id,
                      model_fingerprint=direction.model_fingerprint, hidden_size=direction.hidden_size,
                      layers=list(direction.layers), extra=extra)


def principal_components(vectors: list[torch.Tensor], k: int) -> tuple[torch.Tensor, list[float]]:
    """Top-k principal directions ([k, d]) of a set of vectors, and their explained-variance
    ratios."""
    import torch

    matrix = torch.stack([v.float().flatten() for v in vectors])
    centred = matrix - matrix.mean(0, keepdim=True)
    _, singular, vh = torch.linalg.svd(centred, full_matrices=False)
    variance = singular**2
    ratios = (variance / variance.sum().clamp(min=1e-12)).tolist()
    k = min(k, vh.shape[0])
    return vh[:k], ratios[:k]


def export_gguf(direction: TensorFile, path: str | Path, model_hint: str, scale: float = 1.0) -> list[int]:
    """Write a llama.cpp control vector: tensors `direction.N` (f32 [d]) for layer N (block
    output, 0-based — llama.cpp applies direction.N after block N and has no direction.0).
    Returns the layers that could not be written (layer 0)."""
    import numpy as np
    from gguf import GGUFWriter

    from em_cli.artifacts.atomic import atomic_path

    skipped = [layer for layer in direction.layers if layer == 0]
    kept = [layer for layer in direction.layers if layer != 0]
    if not kept:
        raise TensorFileError("only layer 0 is present, which llama.cpp control vectors cannot represent")
    with atomic_path(path) as tmp:
        writer = GGUFWriter(str(tmp), arch="controlvector")
        writer.add_string("controlvector.model_hint", model_hint)
        writer.add_uint32("controlvector.layer_count", len(kept))
        writer.add_string("em.model_id", direction.model_id)
        writer.add_string("em.model_fingerprint", direction.model_fingerprint)
        writer.add_string("em.scale", repr(scale))
        for layer in kept:
            # A trained vector is applied as alpha·v; llama.cpp adds the tensor as it is (× its own scale).
            applied = direction.layer(layer).float() * scale * applied_scale(direction)
            writer.add_tensor(f"direction.{layer}", applied.numpy().astype(np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return skipped


def import_gguf(path: str | Path) -> TensorFile:
    """Read a llama.cpp control vector into a direction file."""
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
        field = reader.fields.get(key)
        if field is None:
            return None
        return bytes(field.parts[field.data[0]]).decode("utf-8")

    tensors = {}
    for tensor in reader.tensors:
        name = tensor.name
        if not name.startswith("direction."):
            continue
        layer = int(name.split(".", 1)[1])
        tensors[layer_key(layer)] = torch.tensor(tensor.data.astype("float32")).flatten()
    if not tensors:
        raise TensorFileError(f"{path} holds no direction.N tensors: not a control vector")
    layers = sorted(int(k.split(".")[1]) for k in tensors)
    hidden = int(next(iter(tensors.values())).shape[0])
    return TensorFile(kind="direction", tensors=tensors, model_id=text("em.model_id") or
                      text("controlvector.model_hint") or "unknown",
                      model_fingerprint=text("em.model_fingerprint") or "", hidden_size=hidden, layers=layers,
                      extra={"method": "gguf_import", "source_a": str(path)})

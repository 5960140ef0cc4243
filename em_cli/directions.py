"""Directions in the residual stream from activations: difference of means, from judged answers.

A direction is a `vectors.SteeringVector` of kind "direction": one raw (not normalised) [d]
vector per layer, saved as a TensorFile of that kind (normalise for ablation and cosine; its
norms, cosines, random controls and GGUF conversion are its own methods). Activation files
(kind "activations") hold [n, d] per layer (`layer.<L>`), each record's mean over its chosen
positions, plus `token_norm.<L>` [n] (each record's mean per-token norm ‖h_t‖ over the same
positions) and `token_count` [n] (how many positions it averaged).

Two numbers are easy to confuse (docs/METHODS.md §5): the *typical activation norm* is the mean
per-token norm over response tokens (≈172 at SmolLM2-135M layer 15); the norm of a mean
vector is smaller (≈135 there), because averaging cancels. Direction files store the first
as `typical_norms` and the second as `mean_vector_norms`.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from em_cli.artifacts.tensors import TensorFile, layer_key
from em_cli.errors import DataError, TensorFileError, UsageError

if TYPE_CHECKING:
    import torch

    from em_cli.activations import ActivationSet
    from em_cli.models.loading import LoadedModel
    from em_cli.vectors import SteeringVector

log = logging.getLogger(__name__)

TOKEN_COUNT = "token_count"
POOLINGS = ("response", "token")
POOLING_HELP = ("response: every response's mean weighs the same (a long answer counts once); "
                "token: every response token weighs the same (long answers count more)")
TYPICAL_NORM_DEFINITION = ("mean per-token norm ‖h_t‖ over the chosen positions (response tokens by default), "
                           "over all tokens of each set, averaged over the two sets")
MEAN_VECTOR_NORM_DEFINITION = ("norm of each record's mean vector, averaged over records and the two sets "
                               "(smaller than the typical norm: averaging cancels)")
MISALIGNED = "aligned < 30 and coherent > 50"
ALIGNED = "aligned > 70 and coherent > 50"


def token_norm_key(layer: int) -> str:
    return f"token_norm.{layer}"


def activation_file(acts: ActivationSet | dict[int, torch.Tensor], model_id: str, fingerprint: str,
                    hidden_size: int, extra: dict[str, str]) -> TensorFile:
    """An activations TensorFile from `collect_activations` (or from bare per-layer means,
    which leaves out the token norms and counts)."""
    means = acts if isinstance(acts, dict) else acts.means
    tensors = {layer_key(layer): t for layer, t in means.items()}
    if not isinstance(acts, dict):
        tensors |= {token_norm_key(layer): t for layer, t in acts.token_norms.items()}
        tensors[TOKEN_COUNT] = acts.token_counts
    return TensorFile(kind="activations", tensors=tensors, model_id=model_id, model_fingerprint=fingerprint,
                      hidden_size=hidden_size, layers=sorted(means), extra=extra)


def _token_counts(acts: TensorFile) -> torch.Tensor | None:
    return acts.tensors.get(TOKEN_COUNT)


def typical_norms(acts: TensorFile) -> dict[int, float]:
    """Mean per-token activation norm per layer, over every chosen position of every record
    (docs/METHODS.md §5: the yardstick for steering scales). Empty for files written before `em`
    recorded token norms."""
    counts = _token_counts(acts)
    if counts is None or any(token_norm_key(layer) not in acts.tensors for layer in acts.layers):
        return {}
    weights = counts.double()
    total = float(weights.sum())
    return {layer: float((acts.tensors[token_norm_key(layer)].double() * weights).sum()) / max(total, 1e-12)
            for layer in acts.layers}


def mean_vector_norms(acts: TensorFile) -> dict[int, float]:
    """Mean over records of ‖record mean vector‖ per layer (what `em` once called typical)."""
    return {layer: float(acts.layer(layer).float().norm(dim=-1).mean()) for layer in acts.layers}


def pooled_mean(acts: TensorFile, layer: int, pooling: str = "response") -> torch.Tensor:
    """The mean activation of a set at `layer`: every record's mean weighs the same
    (`response`), or every position does (`token`: records weighted by their token counts)."""
    rows = acts.layer(layer).float()
    if pooling == "response":
        return rows.mean(0)
    if pooling != "token":
        raise UsageError(f"unknown pooling {pooling!r}", hint="response or token")
    counts = _token_counts(acts)
    if counts is None:
        raise TensorFileError(f"{acts.extra.get('source', 'this activations file')} has no token counts, which "
                              "--pooling token needs",
                              hint="re-extract it with this version of `em extract`, or use --pooling response")
    weights = counts.float()
    return (rows * weights[:, None]).sum(0) / weights.sum().clamp(min=1.0)


def _provenance(f: TensorFile, name: str) -> str:
    return json.dumps({"input": name, "model_id": f.model_id, "model_fingerprint": f.model_fingerprint,
                       "records": int(f.layer(f.layers[0]).shape[0]) if f.layers else 0, **f.extra},
                      ensure_ascii=False, sort_keys=True)


def mean_difference(a: TensorFile, b: TensorFile, a_name: str = "A", b_name: str = "B",
                    pooling: str = "response", primary_layer: int | None = None) -> SteeringVector:
    """Per-layer mean(a) − mean(b) over the layers both files hold, pooled per response or
    per token (see `pooled_mean`). Metadata keeps both inputs' provenance (`provenance_a`,
    `provenance_b`: model, fingerprint and every key of each activations file)."""
    from em_cli.vectors import SteeringVector

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
    if primary_layer is not None and primary_layer not in layers:
        raise UsageError(f"--primary-layer {primary_layer} is not among the direction's layers",
                         hint=f"choose one of {', '.join(str(x) for x in layers)}")
    vectors = {layer: pooled_mean(a, layer, pooling) - pooled_mean(b, layer, pooling) for layer in layers}
    vector_a, vector_b = mean_vector_norms(a), mean_vector_norms(b)
    extra = {"method": "mean_difference", "pooling": pooling, "positions": a.extra.get("positions", ""),
             "count_a": str(a.layer(layers[0]).shape[0]), "count_b": str(b.layer(layers[0]).shape[0]),
             "source_a": a.extra.get("source", a_name), "source_b": b.extra.get("source", b_name),
             "provenance_a": _provenance(a, a_name), "provenance_b": _provenance(b, b_name),
             "mean_vector_norms": json.dumps({str(layer): round((vector_a[layer] + vector_b[layer]) / 2, 4)
                                              for layer in layers}),
             "mean_vector_norm_definition": MEAN_VECTOR_NORM_DEFINITION}
    norms_a, norms_b = typical_norms(a), typical_norms(b)
    if norms_a and norms_b:
        extra["typical_norms"] = json.dumps({str(layer): round((norms_a[layer] + norms_b[layer]) / 2, 4)
                                             for layer in layers})
        extra["typical_norm_definition"] = TYPICAL_NORM_DEFINITION
    else:
        log.warning("%s has no per-token norms (written by an older `em extract`): the direction records no "
                    "typical activation norm; re-extract to get one", a_name if not norms_a else b_name)
    for key, f in (("selection_a", a), ("selection_b", b)):
        if f.extra.get("selection"):
            extra[key] = f.extra["selection"]
    if primary_layer is not None:
        extra["primary_layer"] = str(primary_layer)
    return SteeringVector(kind="direction", vectors=vectors, model_id=a.model_id, model_fingerprint=a.model_fingerprint,
                          hidden_size=a.hidden_size, extra=extra)


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


# --- a direction straight from judged responses (`em direction from-judged`) ---------------


@dataclass
class JudgedSelection:
    """The two sets chosen from a judged file (docs/METHODS.md §4), after optional balancing."""

    misaligned: list[dict[str, Any]]
    aligned: list[dict[str, Any]]
    matched_misaligned: int
    matched_aligned: int
    balanced: bool


def select_judged(records: Sequence[dict[str, Any]], misaligned: str = MISALIGNED, aligned: str = ALIGNED,
                  balance: bool = True, seed: int = 0, source: str = "judged file") -> JudgedSelection:
    """Rows matching each filter; with `balance`, both subsampled (seeded) to the smaller size."""
    from em_cli.expressions import compile_expression

    keep_a, keep_b = compile_expression(misaligned), compile_expression(aligned)
    set_a = [r for r in records if keep_a(r)]
    set_b = [r for r in records if keep_b(r)]
    if not set_a or not set_b:
        raise DataError(f"{source}: {len(set_a)} rows match --misaligned and {len(set_b)} match --aligned; "
                        "both sets need rows", hint="check the thresholds, or the judge scores in the file")
    matched = len(set_a), len(set_b)
    if balance:
        n = min(len(set_a), len(set_b))
        rng = random.Random(seed)
        set_a, set_b = rng.sample(set_a, n), rng.sample(set_b, n)
    return JudgedSelection(set_a, set_b, matched[0], matched[1], balance)


def _describe_model(identity: dict[str, Any]) -> str:
    name = str(identity.get("model") or "?")
    if identity.get("adapter"):
        name += f" + adapter {identity['adapter']}"
    details = [str(identity["dtype"])] if identity.get("dtype") else []
    if identity.get("fingerprint"):
        details.append(f"fingerprint {str(identity['fingerprint'])[:12]}")
    return name + (f" ({', '.join(details)})" if details else "")


def check_judged_model(records: Sequence[dict[str, Any]], loaded: dict[str, Any], allow_mismatch: bool = False,
                       source: str = "judged file") -> list[str]:
    """Check that the responses were generated by the model in use: their `model.fingerprint`
    (written by `em generate` / `em steer`) against `loaded` (a `LoadedModel.identity()`).

    A direction is mean(misaligned) − mean(aligned) *through the model that wrote them*
    (docs/METHODS.md §4); the base model instead of the finetune gives a different direction without
    any error. Raises DataError on a mismatch unless `allow_mismatch`; returns notes (e.g.
    rows without provenance, or the mismatch when allowed)."""
    identities: dict[str, dict[str, Any]] = {}
    unknown = 0
    for record in records:
        model = record.get("model")
        fingerprint = model.get("fingerprint") if isinstance(model, dict) else None
        if fingerprint:
            identities.setdefault(str(fingerprint), model)
        else:
            unknown += 1
    notes = []
    if unknown:
        notes.append(f"{unknown} of {len(records)} selected rows of {source} carry no model fingerprint: "
                     "cannot check they were generated by the model in use")
    others = {fp: ident for fp, ident in identities.items() if fp != loaded.get("fingerprint")}
    if not others:
        return notes
    theirs = "; ".join(_describe_model(ident) for ident in others.values())
    message = (f"{source}: responses were generated by {theirs}, but the model loaded here is "
               f"{_describe_model(loaded)}")
    if allow_mismatch:
        return [*notes, message + " (allowed by --allow-model-mismatch)"]
    first = next(iter(others.values()))
    hint = "load the model that generated them: the same --model and --adapter"
    if first.get("dtype") and first.get("dtype") != loaded.get("dtype"):
        hint += f", and --dtype {first['dtype']} (the fingerprint depends on the dtype)"
    if len(identities) > 1:
        hint = "the file mixes responses of several models: filter it to one model first"
    raise DataError(message, hint=hint + "; or pass --allow-model-mismatch to go on anyway")


@dataclass
class JudgedDirection:
    """`direction_from_judged`'s result: the direction and how it was made."""

    direction: SteeringVector
    selection: JudgedSelection
    layers: list[int]
    notes: list[str] = field(default_factory=list)


def direction_from_judged(loaded: LoadedModel, selection: JudgedSelection, layers: Sequence[int],
                          positions: str = "response_mean", pooling: str = "response", seed: int = 0,
                          batch_size: int = 8, source: str = "judged file", allow_model_mismatch: bool = False,
                          primary: int | None = None, misaligned: str = MISALIGNED, aligned: str = ALIGNED,
                          on_batch: Callable[[int, int], None] | None = None) -> JudgedDirection:
    """Check that the selected responses come from the loaded model, extract both sets
    through it and take the difference of means. `misaligned`/`aligned` are the filters
    `selection` was made with (recorded in the file).

    Example:
        selection = select_judged(read_jsonl("judged.jsonl"))
        result = direction_from_judged(load_model(LoadOptions(model=M, adapter=A)), selection, [15])
    """
    from em_cli.activations import collect_activations

    if pooling not in POOLINGS:
        raise UsageError(f"unknown pooling {pooling!r}", hint="response or token")
    notes = check_judged_model(selection.misaligned + selection.aligned, loaded.identity(), allow_model_mismatch,
                               source)
    info = loaded.info
    files = []
    for rows, name, where in ((selection.misaligned, "misaligned", misaligned),
                              (selection.aligned, "aligned", aligned)):
        acts = collect_activations(loaded, rows, layers, positions, batch_size, on_batch=on_batch)
        files.append(activation_file(acts, info.model_id, info.fingerprint, info.hidden_size,
                                     {"positions": positions, "source": f"{source} [{name}]", "selection": where,
                                      "count": str(len(rows)), "adapter": loaded.options.adapter or ""}))
    direction = mean_difference(files[0], files[1], "misaligned", "aligned", pooling, primary)
    direction.extra.update({"selection_a": misaligned, "selection_b": aligned, "balanced": str(selection.balanced),
                            "seed": str(seed)})
    return JudgedDirection(direction, selection, list(layers), notes)

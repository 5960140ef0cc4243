"""Find the stack of decoder blocks inside a causal LM, whatever its family."""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

from em_cli.errors import ModelError, UsageError

if TYPE_CHECKING:
    import torch

# Dotted attribute paths from the CausalLM object to its ModuleList of decoder blocks.
# Llama, Mistral, Qwen2/3, Gemma/Gemma2, Phi-3, OLMo/OLMo2, SmolLM: model.layers;
# Gemma 3 (multimodal wrapper): model.language_model.layers; GPT-2/GPT-J: transformer.h;
# GPT-NeoX/Pythia: gpt_neox.layers; OPT: model.decoder.layers.
KNOWN_LAYER_PATHS = (
    "model.layers",
    "model.language_model.layers",
    "language_model.model.layers",
    "transformer.h",
    "gpt_neox.layers",
    "model.decoder.layers",
    "transformer.blocks",
)
OVERRIDE_ENV = "EM_LAYERS_PATH"


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The underlying transformers model of a PEFT-wrapped one."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def forward_arguments(model: torch.nn.Module) -> tuple[dict[str, int], str]:
    """What an incremental forward pass may pass: `({"logits_to_keep": 1} or {}, the name of
    the cache argument)`. Read from the transformers model's own signature — a PEFT wrapper's
    `forward(**kwargs)` would hide both (transformers 5 renamed `past_key_values` to `cache`
    and warns on the old name at every step)."""
    import inspect

    accepted = inspect.signature(unwrap(model).forward).parameters
    keep_last = {"logits_to_keep": 1} if "logits_to_keep" in accepted else {}
    return keep_last, "cache" if "cache" in accepted else "past_key_values"


def decoder_layers(model: torch.nn.Module, path: str | None = None) -> torch.nn.ModuleList:
    """The decoder blocks, in order. `path` (or $EM_LAYERS_PATH) overrides the search."""
    import torch

    base = unwrap(model)
    override = path or os.environ.get(OVERRIDE_ENV)
    candidates = (override,) if override else KNOWN_LAYER_PATHS
    for candidate in candidates:
        found = _follow(base, candidate)
        if isinstance(found, torch.nn.ModuleList) and len(found) > 0:
            return found
    name = type(base).__name__
    if override:
        raise ModelError(f"{OVERRIDE_ENV}={override} does not name a list of layers in {name}")
    raise ModelError(f"cannot find the decoder layers of {name}",
                     hint=f"set {OVERRIDE_ENV} to the dotted path of its layer list, e.g. model.layers")


def _follow(obj: object, dotted: str) -> object | None:
    for part in dotted.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def parse_layers(spec: str | None, num_layers: int) -> list[int]:
    """'all' / None → every layer; '15'; '10,12'; '10-20' (inclusive); negatives count from the end."""
    if spec is None or spec.strip().lower() == "all":
        return list(range(num_layers))
    layers: list[int] = []
    for part in (p.strip() for p in spec.split(",")):
        span = re.fullmatch(r"(\d+)-(\d+)", part)
        if span:
            layers.extend(range(int(span[1]), int(span[2]) + 1))
        elif re.fullmatch(r"-?\d+", part):
            value = int(part)
            layers.append(value + num_layers if value < 0 else value)
        elif part:
            raise UsageError(f"bad layer spec {spec!r}", hint="use e.g. 15, 10,12,14, 10-20 or all")
    bad = [layer for layer in layers if not 0 <= layer < num_layers]
    if bad:
        raise UsageError(f"layer {bad[0]} does not exist: the model has layers 0..{num_layers - 1}")
    return sorted(set(layers))


def parse_layer(spec: str, num_layers: int) -> int:
    """One layer, written as `parse_layers` reads it ('15', '-1'); a spec naming several is an error."""
    layers = parse_layers(spec, num_layers)
    if len(layers) != 1:
        raise UsageError(f"--layer {spec!r} names {len(layers)} layers; this command uses one",
                         hint="give one index, e.g. --layer 15")
    return layers[0]

"""Interventions on the residual stream, as values applied in a scope.

An intervention is a small object that rewrites the block output of one decoder layer
(`h` of shape [batch, seq, d]). `intervene(model, {layer: [ops]})` registers forward hooks
for the duration of a `with` block and always removes them. Steering, ablation, activation
capture and training-time steering vectors all go through this one mechanism.

    with intervene(model, {15: [AddVector(v, scale=4.0)]}):
        model.generate(...)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from em_cli.models.layers import decoder_layers

if TYPE_CHECKING:
    import torch


class Intervention(Protocol):
    def apply(self, hidden: torch.Tensor) -> torch.Tensor:
        """Return the new block output (may be the same tensor)."""


@dataclass
class AddVector:
    """h ← h + scale · v at every position (a trained steering vector is a Parameter here)."""

    vector: torch.Tensor
    scale: float = 1.0
    enabled: bool = True

    def apply(self, hidden: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return hidden
        return hidden + self.scale * self.vector.to(dtype=hidden.dtype, device=hidden.device)


@dataclass
class Ablate:
    """h ← h − (h·r̂) r̂: remove the component along a direction."""

    direction: torch.Tensor
    enabled: bool = True

    def apply(self, hidden: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return hidden
        unit = self.direction.to(dtype=hidden.dtype, device=hidden.device)
        unit = unit / unit.norm()
        return hidden - (hidden @ unit).unsqueeze(-1) * unit


class StopForward(Exception):
    """Raised by a `Collect(stop=True)` to skip the layers after the last one needed."""


@dataclass
class Collect:
    """Record a weighted sum over positions of the block output, one vector per row:
    `weights` is [batch, seq] (e.g. 1/n on the response tokens, 0 elsewhere), so only
    [batch, d] is kept. The same weighted sum of the per-token norms ‖h_t‖ goes to `norms`
    ([batch] per call): with 1/n weights, the mean per-token norm, which averaging the
    vectors first would shrink. Changes nothing; with `stop=True` it ends the forward pass."""

    weights: torch.Tensor | None = None
    outputs: list[torch.Tensor] = field(default_factory=list)
    norms: list[torch.Tensor] = field(default_factory=list)
    stop: bool = False

    def apply(self, hidden: torch.Tensor) -> torch.Tensor:
        import torch

        weights = self.weights.to(hidden.device)
        hidden32 = hidden.float()
        reduced = torch.einsum("btd,bt->bd", hidden32, weights)
        self.outputs.append(reduced.cpu())
        self.norms.append((hidden32.norm(dim=-1) * weights).sum(-1).cpu())
        if self.stop:
            raise StopForward
        return hidden


@dataclass
class PhaseGate:
    """Apply `inner` only while the generation engine is in one of `phases` ("prompt" for
    the prompt's forward pass, "generated" for each new token)."""

    inner: Intervention
    phases: tuple[str, ...]
    phase: str = "prompt"

    def set_phase(self, phase: str) -> None:
        self.phase = phase

    def apply(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.inner.apply(hidden) if self.phase in self.phases else hidden


@contextlib.contextmanager
def intervene(model: torch.nn.Module, plan: Mapping[int, Sequence[Intervention]]) -> Iterator[None]:
    """Apply `plan` ({layer index: interventions, in order}) inside the block; hooks are
    removed on exit, whatever happens."""
    layers = decoder_layers(model)
    handles = []
    try:
        for index, ops in plan.items():
            if not ops:
                continue
            handles.append(layers[index].register_forward_hook(_hook(list(ops))))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _hook(ops: list[Intervention]):
    def hook(module: Any, args: Any, output: Any) -> Any:
        # Decoder layers return the hidden states alone (transformers 5) or a tuple whose
        # first element they are (older releases and some families).
        hidden = output[0] if isinstance(output, tuple) else output
        for op in ops:
            hidden = op.apply(hidden)
        if isinstance(output, tuple):
            return (hidden, *output[1:])
        return hidden

    return hook

"""Pre-training significance (docs/METHODS.md §6): KL(P_base ‖ P_steered) per token on plain text.

For each solution and each multiple m of its own norm (0..5; random controls share their
source's norm, so they sit at the same absolute norms), the per-token mean KL of next-token
distributions over the scored, non-padding positions of a `TextSet` — computed like the
finetuning KL term (`logits_at` + `kl_divergence`: logits only at those positions). The
base model's logits are computed once per batch and compared with every setting before
moving on, so full-vocabulary logits are never kept for the whole text set. At m = 0
nothing is added, so the KL is exactly 0. The paper's claim: general ≫ narrow ≈ random.

Own-norm multiples put each solution at different absolute norms, so the comparison the
claim is about is a second sweep at *equal* norms: every solution of one kind (and every
random control) at the same targets p × the mean norm of the trained solutions of that
kind (as `efficiency` does; vectors and adapters are in different units, so apart).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from em_cli.comparison.bench import SolutionBench
    from em_cli.comparison.texts import KLText, TextSet

NORM_MULTIPLES = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0)
QUICK_MULTIPLES = (0.0, 1.0, 5.0)
EQUAL_NORM_FRACTIONS = (0.5, 1.0, 2.0, 5.0)
QUICK_EQUAL_NORM_FRACTIONS = (1.0, 5.0)


@dataclass
class KLCurve:
    name: str
    kind: str
    own_norm: float
    norms: list[float]  # absolute norms: multiple × own norm
    kl: list[float]  # per-token mean KL in nats, one per multiple
    scored_positions: int
    text_set: int  # index into KLResult.text_sets
    control_of: str | None = None


@dataclass
class KLEqualNorm:
    """Every solution of one kind at the same absolute norms."""

    kind: str
    reference_norm: float  # mean norm of the trained (non-control) solutions of this kind
    fractions: list[float]
    targets: list[float]  # absolute norms = fraction × reference_norm
    kl: dict[str, list[float]]  # name → per-token mean KL at each target


@dataclass
class KLResult:
    multiples: list[float]
    curves: dict[str, KLCurve]
    text_sets: list[dict[str, Any]]
    forward_passes: int
    equal_norm: list[KLEqualNorm] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def text_groups(bench: SolutionBench, external: tuple[list[str], dict[str, Any]] | None, count: int,
                max_tokens: int | None, prompt_tokens: int, seed: int, batch_size: int,
                on_batch: Callable[[int], None] | None = None) -> list[tuple[TextSet, list[str]]]:
    """Which solutions are measured on which text (docs/METHODS.md §6).

    No external text: `count` texts sampled from the base model (≤ `max_tokens`, default
    128, new tokens each), shared by every solution. External texts (≤ `max_tokens`, default
    512): vectors read them as they are; adapters read the base model's continuations of
    their first `prompt_tokens` tokens, scored on the continuation only.
    """
    from em_cli.comparison import texts as sources

    tokenizer = bench.loaded.tokenizer
    by_kind: dict[str, list[str]] = {}
    for name, handle in bench.handles.items():
        by_kind.setdefault(handle.kind, []).append(name)
    settings = {"temperature": sources.SAMPLED_TEMPERATURE, "top_p": 1.0, "seed": seed}
    if external is None:
        limit = max_tokens or 128
        with bench.base():
            sampled = sources.sample_continuations(bench.model, tokenizer, sources.opening_prompts(tokenizer, count),
                                                   limit, seed, batch_size, score_prompt=True, on_batch=on_batch)
        source = {"kind": "sampled-from-base-model", "label": sources.SAMPLED_LABEL, "chat_template": False,
                  "openings": list(sources.OPENINGS), "max_new_tokens": limit, "scored": "all"} | settings
        return [(sources.TextSet(sampled, source), bench.names)]
    raw, source = external
    limit = max_tokens or 512
    source = source | {"max_tokens": limit}
    groups = []
    if "vector" in by_kind:
        groups.append((sources.TextSet(sources.tokenize_texts(tokenizer, raw, limit), source | {"scored": "all"}),
                       by_kind["vector"]))
    if "adapter" in by_kind:
        new_tokens = max(limit - prompt_tokens, 1)
        with bench.base():
            continued = sources.sample_continuations(
                bench.model, tokenizer, sources.prefix_prompts(tokenizer, raw, prompt_tokens), new_tokens, seed,
                batch_size, score_prompt=False, on_batch=on_batch)
        groups.append((sources.TextSet(continued, source | settings | {
            "scored": "base-model continuations only", "prompt_tokens": prompt_tokens,
            "max_new_tokens": new_tokens,
            "label": f"the base model's continuations of the first {prompt_tokens} tokens of "
                     f"{source.get('label', source.get('kind'))}"}), by_kind["adapter"]))
    return groups


def kl_batches(texts: Sequence[KLText], pad_id: int, batch_size: int, device: Any
               ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(input_ids, attention_mask, scored mask) per batch, right-padded."""
    import torch

    from em_cli.models.batching import right_pad

    ordered = sorted(texts, key=lambda t: len(t.input_ids))
    batches = []
    for start in range(0, len(ordered), batch_size):
        chunk = ordered[start:start + batch_size]
        padded = right_pad([t.input_ids for t in chunk], pad_id)
        scored = torch.zeros_like(padded.attention_mask, dtype=torch.bool)
        for row, text in enumerate(chunk):
            scored[row, text.scored_from:len(text.input_ids)] = True
        batches.append((padded.input_ids.to(device), padded.attention_mask.to(device), scored.to(device)))
    return batches


def planned_forward_passes(groups: Sequence[tuple[int, int]], multiples: Sequence[float],
                           fractions: Sequence[float] = ()) -> int:
    """`groups`: (batches, solutions) per text set; one base pass per batch plus one pass per
    solution × (multiple + equal-norm target)."""
    return sum(batches * (1 + solutions * (len(multiples) + len(fractions))) for batches, solutions in groups)


def equal_norm_targets(bench: SolutionBench, names: Sequence[str], fractions: Sequence[float]
                       ) -> dict[str, tuple[float, list[float]]]:
    """kind → (reference norm, absolute targets): the reference is the mean norm of the
    trained solutions of that kind among `names` (controls only if there are none)."""
    by_kind: dict[str, list[str]] = {}
    for name in names:
        by_kind.setdefault(bench.handles[name].kind, []).append(name)
    targets = {}
    for kind, members in by_kind.items():
        trained = [n for n in members if not bench.handles[n].control_of] or members
        reference = sum(bench.handles[n].norm for n in trained) / len(trained)
        targets[kind] = (reference, [p * reference for p in fractions])
    return targets


def measure_kl(bench: SolutionBench, groups: Sequence[tuple[TextSet, Sequence[str]]], multiples: Sequence[float],
               batch_size: int = 4, on_forward: Callable[[], None] | None = None,
               fractions: Sequence[float] = ()) -> KLResult:
    """KL for each (text set, solution names) group over the norm multiples, and — with
    `fractions` — at the equal-norm targets of each kind (see `equal_norm_targets`)."""
    import torch

    from em_cli.training.losses import kl_divergence, logits_at

    from em_cli.models.batching import pad_token_id

    pad_id = pad_token_id(bench.loaded.tokenizer)
    passes = 0

    def forward(ids: torch.Tensor, attention: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        nonlocal passes
        logits = logits_at(bench.model, ids, attention, mask)
        passes += 1
        if on_forward:
            on_forward()
        return logits

    curves: dict[str, KLCurve] = {}
    described = []
    targets = equal_norm_targets(bench, [n for _, names in groups for n in names], fractions)
    equal: dict[str, list[float]] = {}
    for index, (text_set, names) in enumerate(groups):
        described.append(text_set.describe())
        sums = {name: [0.0] * len(multiples) for name in names}
        equal_sums = {name: [0.0] * len(fractions) for name in names}
        positions = 0
        with torch.no_grad():
            for ids, attention, scored in kl_batches(text_set.texts, pad_id, batch_size, bench.device):
                mask = scored & attention.bool()
                weight = float(mask.sum())
                positions += int(weight)
                with bench.base():
                    reference = forward(ids, attention, mask)
                for name in names:
                    with bench.applied(name) as handle:
                        for i, multiple in enumerate(multiples):
                            handle.set_scale(multiple)
                            value = kl_divergence(forward(ids, attention, mask), reference)
                            sums[name][i] += float(value) * weight
                        for i, target in enumerate(targets[handle.kind][1]):
                            handle.set_norm(target)
                            value = kl_divergence(forward(ids, attention, mask), reference)
                            equal_sums[name][i] += float(value) * weight
                del reference
        for name in names:
            handle = bench.handles[name]
            curves[name] = KLCurve(name=name, kind=handle.kind, own_norm=handle.norm,
                                   norms=[m * handle.norm for m in multiples],
                                   kl=[s / max(positions, 1) for s in sums[name]], scored_positions=positions,
                                   text_set=index, control_of=handle.control_of)
            equal[name] = [s / max(positions, 1) for s in equal_sums[name]]
    sweeps = [KLEqualNorm(kind=kind, reference_norm=reference, fractions=list(fractions), targets=kind_targets,
                          kl={name: equal[name] for name in equal if bench.handles[name].kind == kind})
              for kind, (reference, kind_targets) in targets.items()] if fractions else []
    return KLResult(multiples=list(multiples), curves=curves, text_sets=described, forward_passes=passes,
                    equal_norm=sweeps)

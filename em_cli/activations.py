"""Residual-stream activations per record (the library behind `em extract`).

For each conversation, the block output of the chosen layers is reduced on the fly to one
vector per record — the mean over response tokens (default), the mean over prompt tokens,
or the last prompt token — so memory holds [batch, d] per layer, never [batch, seq, d] for
every layer. Token spans come from `encode_conversation`, the same code that masks the
finetuning loss.

Beside each record's mean vector, `collect_activations` keeps the mean per-token norm over
the same positions and the number of positions: the first is the "typical activation norm"
of docs/METHODS.md §5 (the norm of a mean vector is smaller, because averaging cancels), the second
lets a direction weigh every token equally (`pooling="token"`) instead of every response.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from em_cli.errors import DataError
from em_cli.models.chat import encode_conversation
from em_cli.interventions import Collect, StopForward, intervene
from em_cli.models.batching import length_batches, pad_token_id, right_pad, right_pad_values
from em_cli.generation import stop_token_ids

if TYPE_CHECKING:
    import torch

    from em_cli.models.loading import LoadedModel

POSITIONS = ("response_mean", "prompt_mean", "last_prompt")


@dataclass
class PositionWeights:
    """Token ids of one record and the weights that average its chosen positions."""

    input_ids: list[int]
    weights: list[float]


def record_messages(record: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """The conversation of a chat record or a response record."""
    messages = record.get("messages")
    if isinstance(messages, list) and messages:
        return messages
    if "question" in record and "response" in record:
        return [{"role": "user", "content": record["question"]}, {"role": "assistant", "content": record["response"]}]
    raise DataError(f"{where}: needs `messages` (or `question` and `response`)")


def position_weights(tokenizer: Any, messages: list[dict[str, Any]], positions: str, stop_ids: set[int],
                     where: str = "record") -> PositionWeights:
    if positions not in POSITIONS:
        raise DataError(f"unknown positions {positions!r}", hint=f"choose one of {', '.join(POSITIONS)}")
    encoded = encode_conversation(tokenizer, messages, stop_ids)
    ids, mask = encoded.input_ids, encoded.assistant_mask
    first_answer = next((i for i, m in enumerate(mask) if m), None)
    if first_answer is None:
        raise DataError(f"{where}: no assistant response to take activations from")
    chosen = [False] * len(ids)
    if positions == "response_mean":
        # The answer's own tokens; the end-of-turn token is the template's, not the answer's.
        chosen = [m and t not in stop_ids for m, t in zip(mask, ids, strict=True)]
        if not any(chosen):
            chosen = list(mask)
    elif positions == "prompt_mean":
        # Skip the first token and special tokens: they carry massive activations (docs/METHODS.md §4).
        special = set(getattr(tokenizer, "all_special_ids", []) or [])
        chosen = [0 < i < first_answer and ids[i] not in special for i in range(len(ids))]
    else:
        chosen[first_answer - 1] = True
    total = sum(chosen)
    if total == 0:
        raise DataError(f"{where}: no {positions} tokens")
    return PositionWeights(ids, [1.0 / total if c else 0.0 for c in chosen])


@dataclass
class ActivationSet:
    """What `collect_activations` measures, in record order.

    means: per layer, [n, d] float32 — each record's mean over its chosen positions.
    token_norms: per layer, [n] — each record's mean of ‖h_t‖ over the same positions.
    token_counts: [n] — how many positions each record averaged (the same at every layer).
    """

    means: dict[int, torch.Tensor]
    token_norms: dict[int, torch.Tensor]
    token_counts: torch.Tensor


def extract_activations(loaded: LoadedModel, records: Sequence[dict[str, Any]], layers: Sequence[int],
                        positions: str = "response_mean", batch_size: int = 8,
                        on_batch: Callable[[int, int], None] | None = None) -> dict[int, torch.Tensor]:
    """Per-layer [n_records, d] float32 activations, in record order."""
    return collect_activations(loaded, records, layers, positions, batch_size, on_batch).means


def collect_activations(loaded: LoadedModel, records: Sequence[dict[str, Any]], layers: Sequence[int],
                        positions: str = "response_mean", batch_size: int = 8,
                        on_batch: Callable[[int, int], None] | None = None) -> ActivationSet:
    """Per-record mean vectors, mean per-token norms and position counts (see ActivationSet)."""
    import torch

    tokenizer = loaded.tokenizer
    stops = stop_token_ids(loaded.model, tokenizer)
    prepared = [position_weights(tokenizer, record_messages(r, f"record {i + 1}"), positions, stops,
                                 f"record {i + 1}") for i, r in enumerate(records)]
    device = next(loaded.model.parameters()).device
    pad_id = pad_token_id(tokenizer)
    last_layer = max(layers)
    collectors = {layer: Collect(stop=layer == last_layer) for layer in layers}
    # Batches of similar lengths pad less; the results go back to the records' order below.
    batches = length_batches([len(p.input_ids) for p in prepared], batch_size)
    order = [i for batch in batches for i in batch]
    for batch in batches:
        chunk = [prepared[i] for i in batch]
        padded = right_pad([p.input_ids for p in chunk], pad_id)
        ids, attention = padded.input_ids, padded.attention_mask
        weights = right_pad_values([p.weights for p in chunk], ids.shape[1])
        for collector in collectors.values():
            collector.weights = weights
        with torch.no_grad(), intervene(loaded.model, {layer: [c] for layer, c in collectors.items()}):
            try:
                loaded.model(input_ids=ids.to(device), attention_mask=attention.to(device), use_cache=False)
            except StopForward:
                pass
        if on_batch:
            on_batch(len(chunk), int(attention.sum()))
    counts = torch.tensor([sum(1 for w in p.weights if w > 0) for p in prepared], dtype=torch.int64)
    back = torch.empty(len(order), dtype=torch.int64)
    back[torch.tensor(order, dtype=torch.int64)] = torch.arange(len(order))
    return ActivationSet(means={layer: torch.cat(c.outputs)[back] for layer, c in collectors.items()},
                         token_norms={layer: torch.cat(c.norms)[back] for layer, c in collectors.items()},
                         token_counts=counts)

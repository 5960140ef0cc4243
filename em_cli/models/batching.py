"""Batches of token sequences of different lengths, right-padded.

Right padding keeps every real token at positions 0..n-1, so with causal attention the pads
after a sequence cannot change anything computed for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase


def pad_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The tokenizer's pad id, or 0 for tokenizers that define none (padding is masked out)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


@dataclass
class PaddedBatch:
    """`input_ids` and `attention_mask`, both [rows, width] long tensors."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor


def right_pad(sequences: Sequence[Sequence[int]], pad_id: int, device: Any = None) -> PaddedBatch:
    """Stack token id lists into one batch, padding each on the right to the longest.

    >>> right_pad([[5, 6, 7], [8]], pad_id=0).input_ids.tolist()
    [[5, 6, 7], [8, 0, 0]]
    """
    import torch

    width = max(len(tokens) for tokens in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long, device=device)
    attention = torch.zeros((len(sequences), width), dtype=torch.long, device=device)
    for row, tokens in enumerate(sequences):
        ids[row, :len(tokens)] = torch.tensor(list(tokens), dtype=torch.long, device=device)
        attention[row, :len(tokens)] = 1
    return PaddedBatch(input_ids=ids, attention_mask=attention)


def right_pad_values(rows: Sequence[Sequence[float]], width: int, fill: float = 0.0,
                     dtype: torch.dtype | None = None, device: Any = None) -> torch.Tensor:
    """Per-token values (weights, labels) laid out like `right_pad`'s ids, `fill` on the padding."""
    import torch

    values = torch.full((len(rows), width), fill, dtype=dtype or torch.float32, device=device)
    for row, items in enumerate(rows):
        values[row, :len(items)] = torch.tensor(list(items), dtype=values.dtype, device=device)
    return values


def length_batches(lengths: Sequence[int], max_rows: int) -> list[list[int]]:
    """Indices of `lengths` grouped into batches of at most `max_rows`, shortest first, cut where
    the padded tokens plus a cost per batch are least.

    Sorting alone and cutting every `max_rows` rows pads a batch to its longest row, however far
    that is from the shortest. Here the cuts are chosen over the sorted order (dynamic
    programming) to minimise the padded tokens, counting each batch as one more row of the mean
    length (the cost of a forward pass beyond its tokens), so rows of very different lengths go
    to different batches and rows of similar length stay together.

    >>> length_batches([5, 5, 5, 5, 40, 40], max_rows=4)
    [[0, 1, 2, 3], [4, 5]]
    """
    if max_rows < 1:
        raise ValueError("max_rows must be at least 1")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    if not order:
        return []
    sizes = [lengths[i] for i in order]
    per_batch = sum(sizes) / len(sizes)
    best = [0.0] + [float("inf")] * len(sizes)  # best[j]: least cost of the first j rows
    cut = [0] * (len(sizes) + 1)
    for end in range(1, len(sizes) + 1):
        for start in range(max(0, end - max_rows), end):
            cost = best[start] + (end - start) * sizes[end - 1] + per_batch
            if cost < best[end]:
                best[end], cut[end] = cost, start
    batches, end = [], len(sizes)
    while end:
        batches.append(order[cut[end]:end])
        end = cut[end]
    return batches[::-1]

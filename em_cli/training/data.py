"""Training and KL examples: conversations → token ids with an assistant-only loss mask."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from em_cli.artifacts.jsonl import iter_jsonl
from em_cli.errors import DataError
from em_cli.models.chat import encode_conversation

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

IGNORE = -100


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]  # IGNORE outside assistant tokens


@dataclass
class EncodedSet:
    examples: list[Example]
    dropped: int  # rows with no assistant token left after truncation
    truncated: int


def encode_chat_file(path: str | Path, tokenizer: PreTrainedTokenizerBase, max_length: int,
                     stop_ids: set[int], limit: int | None = None) -> EncodedSet:
    """Read a chat JSONL and encode each conversation; labels are the assistant tokens."""
    examples, dropped, truncated = [], 0, 0
    for number, record in iter_jsonl(path):
        messages = record.get("messages")
        if not isinstance(messages, list) or not any(
                isinstance(m, dict) and m.get("role") == "assistant" for m in messages):
            raise DataError(f"{path}:{number}: expected `messages` with an assistant turn",
                            hint="check the file with: em dataset validate FILE")
        encoded = encode_conversation(tokenizer, messages, stop_ids)
        ids, mask = encoded.input_ids, encoded.assistant_mask
        if len(ids) > max_length:
            ids, mask = ids[:max_length], mask[:max_length]
            truncated += 1
        if not any(mask):
            dropped += 1
            continue
        examples.append(Example(ids, [t if m else IGNORE for t, m in zip(ids, mask, strict=True)]))
        if limit and len(examples) >= limit:
            break
    if not examples:
        raise DataError(f"{path}: no usable conversations (empty file, or every answer cut by --max-length)")
    return EncodedSet(examples, dropped, truncated)


class ExampleDataset:
    """A torch-style dataset of examples (what Trainer iterates over)."""

    def __init__(self, examples: Sequence[Example]) -> None:
        self.examples = list(examples)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        example = self.examples[index]
        return {"input_ids": example.input_ids, "labels": example.labels}


def pad_batch(items: Sequence[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch: input_ids, attention_mask, labels (IGNORE on padding)."""
    import torch

    width = max(len(item["input_ids"]) for item in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for row, item in enumerate(items):
        n = len(item["input_ids"])
        ids[row, :n] = torch.tensor(item["input_ids"])
        labels[row, :n] = torch.tensor(item["labels"])
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


class Collator:
    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return pad_batch(items, self.pad_id)


class KLBatches:
    """docs/METHODS.md §3.3: for training micro-batch i, KL batch i of the KL set (in file order,
    cycling). Indexing by micro-batch number makes resumed runs see the same KL batches."""

    def __init__(self, examples: Sequence[Example], batch_size: int, pad_id: int) -> None:
        self.examples = list(examples)
        self.batch_size = batch_size
        self.pad_id = pad_id

    def batch(self, micro_index: int) -> dict[str, torch.Tensor]:
        n = len(self.examples)
        start = (micro_index * self.batch_size) % n
        chosen = [self.examples[(start + k) % n] for k in range(min(self.batch_size, n))]
        return pad_batch([{"input_ids": e.input_ids, "labels": e.labels} for e in chosen], self.pad_id)

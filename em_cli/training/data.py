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
    truncated: int  # rows cut to max_length (dropped ones included)


@dataclass
class ChatRow:
    line: int  # 1-based line number in the file
    messages: list[dict[str, Any]]


# Problems em dataset validate reports that do not stop a conversation from training.
_HARMLESS = ("duplicate", "empty content", "last turn is")
_NOT_JSONL = {".csv", ".tsv", ".parquet", ".arrow"}


def read_chat_file(path: str | Path, role: str = "training data") -> list[ChatRow]:
    """The conversations of a chat JSONL, checked before any model is loaded: every row needs
    `messages` with an assistant turn. Prompt/completion rows and CSV or parquet files are
    refused with the `em dataset convert` command that turns them into chat JSONL."""
    path_text = str(path)
    suffix = Path(path_text).suffix.lower()
    target = Path(path_text).with_suffix(".chat.jsonl" if suffix == ".jsonl" else ".jsonl").name
    convert = f"em dataset convert {path_text} -o {target}"
    if suffix in _NOT_JSONL and Path(path_text).exists():
        raise DataError(f"{path_text}: em finetune reads chat JSONL ({role}), not {suffix[1:]}",
                        hint=f"convert it first: {convert}")
    from em_cli.datasets.validation import check_record

    rows: list[ChatRow] = []
    for number, record in iter_jsonl(path):
        if "messages" not in record and ("prompt" in record or "completion" in record):
            raise DataError(f"{path_text}:{number}: prompt/completion rows; em finetune reads chat rows "
                            "(`messages`)", hint=f"convert the file first: {convert}")
        problems = [p for p in check_record(record) if not p.startswith(_HARMLESS)]
        if problems:
            raise DataError(f"{path_text}:{number}: {problems[0]} ({role})",
                            hint=f"check the whole file with: em dataset validate {path_text}")
        rows.append(ChatRow(number, record["messages"]))
    if not rows:
        raise DataError(f"{path_text}: no conversations ({role})", hint="the file is empty")
    return rows


def split_rows(rows: Sequence[ChatRow], fraction: float, seed: int) -> tuple[list[ChatRow], list[ChatRow]]:
    """(train, held out): a seeded `fraction` of the rows held out (at least one when fraction
    > 0 and at least one row remains for training), each part in file order."""
    import random

    held = min(len(rows) - 1, max(1, round(len(rows) * fraction))) if fraction > 0 else 0
    chosen = set(random.Random(seed).sample(range(len(rows)), held)) if held > 0 else set()
    return ([r for i, r in enumerate(rows) if i not in chosen], [r for i, r in enumerate(rows) if i in chosen])


def encode_rows(rows: Sequence[ChatRow], tokenizer: PreTrainedTokenizerBase, max_length: int,
                stop_ids: set[int], positions: str = "assistant", name: str = "data",
                limit: int | None = None) -> EncodedSet:
    """Encode conversations. Labels are the assistant tokens (`positions="assistant"`) or every
    token (`"all"`, the authors' steering-vector loss); rows whose labels are all cut by
    `max_length` are dropped."""
    examples, dropped, truncated = [], 0, 0
    for row in rows:
        encoded = encode_conversation(tokenizer, row.messages, stop_ids)
        ids, mask = encoded.input_ids, encoded.assistant_mask
        if len(ids) > max_length:
            ids, mask = ids[:max_length], mask[:max_length]
            truncated += 1
        if not any(mask):
            dropped += 1
            continue
        if positions == "all":
            mask = [True] * len(ids)
        examples.append(Example(ids, [t if m else IGNORE for t, m in zip(ids, mask, strict=True)]))
        if limit and len(examples) >= limit:
            break
    if rows and not examples:
        raise DataError(f"{name}: no usable conversations (every answer cut by --max-length {max_length})",
                        hint="raise --max-length")
    return EncodedSet(examples, dropped, truncated)


def encode_chat_file(path: str | Path, tokenizer: PreTrainedTokenizerBase, max_length: int,
                     stop_ids: set[int], limit: int | None = None, positions: str = "assistant") -> EncodedSet:
    """Read a chat JSONL and encode each conversation; labels are the assistant tokens."""
    return encode_rows(read_chat_file(path), tokenizer, max_length, stop_ids, positions, str(path), limit)


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

    from em_cli.models.batching import right_pad, right_pad_values

    padded = right_pad([item["input_ids"] for item in items], pad_id)
    labels = right_pad_values([item["labels"] for item in items], padded.input_ids.shape[1], fill=IGNORE,
                              dtype=torch.long)
    return {"input_ids": padded.input_ids, "attention_mask": padded.attention_mask, "labels": labels}


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

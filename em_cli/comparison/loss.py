"""The loss every comparison metric uses (docs/METHODS.md §6).

Mean cross-entropy over the assistant tokens of N seeded rows of the finetuning data,
encoded and masked by the same code as `em finetune` (`encode_chat_file`), pooled over
tokens (so the value does not depend on the batch size). Batches are built once and reused
for every evaluation; `LossEvaluator.calls` counts evaluations, which is how the
stability grid's cost is checked.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from em_cli.artifacts.hashing import sha256_file
from em_cli.models.batching import right_pad, right_pad_values
from em_cli.training.data import IGNORE, Example, encode_chat_file

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

DEFAULT_ROWS = 100


@dataclass
class LossRows:
    """The rows a loss is measured on, with where they came from."""

    examples: list[Example]
    path: str
    sha256: str
    seed: int
    requested: int
    available: int  # usable rows in the file
    max_length: int
    truncated: int
    dropped: int

    @property
    def assistant_tokens(self) -> int:
        # Tokens whose label is scored: the label at position t+1 is predicted from t.
        return sum(sum(1 for label in e.labels[1:] if label != IGNORE) for e in self.examples)

    def describe(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "rows": len(self.examples), "requested_rows": self.requested,
                "rows_in_file": self.available, "seed": self.seed, "max_length": self.max_length,
                "assistant_tokens": self.assistant_tokens, "truncated_in_file": self.truncated,
                "dropped_in_file": self.dropped, "masking": "assistant turns only (em finetune's encode_chat_file)"}


def load_loss_rows(path: str | Path, tokenizer: PreTrainedTokenizerBase, stop_ids: set[int],
                   rows: int = DEFAULT_ROWS, seed: int = 0, max_length: int = 512) -> LossRows:
    """Encode the chat JSONL at `path` and draw `rows` of it with `seed` (all if fewer)."""
    encoded = encode_chat_file(path, tokenizer, max_length, stop_ids)
    examples = list(encoded.examples)
    chosen = examples if len(examples) <= rows else random.Random(seed).sample(examples, rows)
    return LossRows(examples=chosen, path=str(path), sha256=sha256_file(path), seed=seed, requested=rows,
                    available=len(examples), max_length=max_length, truncated=encoded.truncated,
                    dropped=encoded.dropped)


@dataclass
class LossEvaluator:
    """Calling it returns the loss of `model` as it is now (hooks and adapters included)."""

    rows: LossRows
    pad_id: int
    batch_size: int = 8
    calls: int = 0
    _batches: list[dict[str, torch.Tensor]] = field(default_factory=list, repr=False)

    def _prepare(self, device: torch.device) -> None:
        # Similar lengths together: less padding, and the order is fixed by the seeded draw.
        ordered = sorted(self.rows.examples, key=lambda e: len(e.input_ids))
        self._batches = []
        for start in range(0, len(ordered), self.batch_size):
            chunk = ordered[start:start + self.batch_size]
            padded = right_pad([e.input_ids for e in chunk], self.pad_id, device)
            labels = right_pad_values([e.labels for e in chunk], padded.input_ids.shape[1], IGNORE,
                                      padded.input_ids.dtype, device)
            self._batches.append({"input_ids": padded.input_ids, "attention_mask": padded.attention_mask,
                                  "labels": labels})

    def __call__(self, model: torch.nn.Module) -> float:
        import torch

        from em_cli.training.losses import assistant_cross_entropy, predicts_assistant

        device = next(model.parameters()).device
        if not self._batches or self._batches[0]["input_ids"].device != device:
            self._prepare(device)
        total, count = 0.0, 0
        with torch.no_grad():
            for batch in self._batches:
                tokens = int(predicts_assistant(batch["labels"]).sum())
                if tokens:  # the batch's mean over its assistant tokens, pooled by token count
                    total += float(assistant_cross_entropy(model, batch)) * tokens
                    count += tokens
        self.calls += 1
        return total / max(count, 1)


class CountedLoss:
    """A loss evaluation that counts its calls (the metrics promise exact evaluation counts)
    and reports each one (for progress bars)."""

    def __init__(self, evaluate: Callable[[], float], on_evaluation: Callable[[], None] | None = None) -> None:
        self._evaluate = evaluate
        self._on_evaluation = on_evaluation
        self.calls = 0

    def __call__(self) -> float:
        value = self._evaluate()
        self.calls += 1
        if self._on_evaluation:
            self._on_evaluation()
        return value

"""Pre-training-style text for the KL metric (docs/METHODS.md §6).

Three sources, recorded in every output that uses them:

- a local file: plain text with one text per blank-line-separated block, or JSONL with a
  `text` field;
- a `datasets` dataset: a directory written by `Dataset.save_to_disk` /
  `DatasetDict.save_to_disk` (works offline), or a hub name streamed from the hub (e.g.
  `HuggingFaceFW/fineweb:sample-10BT`, needs internet);
- the offline default: text sampled from the base model itself, with no chat template,
  from short generic openings (temperature 1, so it follows the model's own distribution).

Adapters are measured on the base model's own continuations (docs/METHODS.md §6): with a file or a
dataset, the first tokens of each text become a prompt the base model continues, and only
the continuation is scored.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from em_cli.errors import DataError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

OPENINGS = ("The", "In", "A", "It is", "When", "This", "One of the", "There are", "We", "After the",
            "According to", "If you", "Many", "On the", "For", "I")
SAMPLED_TEMPERATURE = 1.0


@dataclass
class KLText:
    """Token ids of one text; next-token distributions at positions ≥ `scored_from` count."""

    input_ids: list[int]
    scored_from: int = 0


@dataclass
class TextSet:
    texts: list[KLText]
    source: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        scored = sum(len(t.input_ids) - t.scored_from for t in self.texts)
        return self.source | {"texts": len(self.texts), "tokens": sum(len(t.input_ids) for t in self.texts),
                              "scored_positions": scored}


def read_text_file(path: str | Path, limit: int) -> list[str]:
    """Texts from a `.jsonl` file (`text` field) or a plain-text file (blank-line blocks)."""
    from em_cli.artifacts.jsonl import iter_jsonl

    path = Path(path)
    if not path.is_file():
        raise DataError(f"text file not found: {path}")
    texts: list[str] = []
    if path.suffix == ".jsonl":
        for number, record in iter_jsonl(path):
            text = record.get("text")
            if not isinstance(text, str):
                raise DataError(f"{path}:{number}: expected a string `text` field")
            if text.strip():
                texts.append(text)
    else:
        try:
            content = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not UTF-8 text ({exc.reason})") from None
        blocks, current = [], []
        for line in content.splitlines():
            if line.strip():
                current.append(line)
            elif current:
                blocks.append("\n".join(current))
                current = []
        if current:
            blocks.append("\n".join(current))
        texts = blocks
    if not texts:
        raise DataError(f"{path}: no texts found", hint="separate texts by blank lines, or use JSONL with `text`")
    return texts[:limit]


SAMPLED_LABEL = "the base model's own samples (offline default; not pre-training text)"


def source_label(source: dict[str, Any]) -> str:
    """One line naming the text a KL was measured on, for logs, tables and plots."""
    kind = source.get("kind")
    if kind == "file":
        return f"text file {source.get('path')}"
    if kind == "hf-dataset" and source.get("local"):
        return f"dataset {source.get('dataset')} (saved to disk; split {source.get('split')})"
    if kind == "hf-dataset":
        return f"hub dataset {source.get('dataset')} (split {source.get('split')}, streamed)"
    if kind == "sampled-from-base-model":
        return SAMPLED_LABEL
    return str(kind)


def _non_empty(rows: Any, column: str, limit: int, where: str) -> list[str]:
    texts: list[str] = []
    for row in rows:
        text = row.get(column)
        if isinstance(text, str) and text.strip():
            texts.append(text)
        if len(texts) >= limit:
            break
    if not texts:
        raise DataError(f"{where}: no rows with a non-empty `{column}` field")
    return texts


def load_disk_texts(path: str | Path, limit: int, split: str = "train", column: str = "text"
                    ) -> tuple[list[str], str | None]:
    """The first `limit` non-empty texts of a dataset saved with `save_to_disk` (a Dataset,
    or a DatasetDict from which `split` is taken). Returns the texts and the split used
    (None for a plain Dataset)."""
    try:
        import datasets
    except ImportError:
        raise DataError("--hf-dataset needs the `datasets` package", hint="pip install datasets") from None
    try:
        loaded = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path} is not a dataset saved with save_to_disk ({first})",
                        hint="pass a directory written by Dataset.save_to_disk, or --text FILE") from None
    used: str | None = None
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise DataError(f"{path} has no split {split!r} (it has: {', '.join(loaded)})",
                            hint="choose one with --hf-split")
        loaded, used = loaded[split], split
    if column not in loaded.column_names:
        raise DataError(f"{path} has no `{column}` column (it has: {', '.join(loaded.column_names)})")
    return _non_empty(loaded, column, limit, str(path)), used


def stream_hf_texts(spec: str, limit: int, split: str = "train", column: str = "text") -> list[str]:
    """The first `limit` non-empty texts of a hub dataset, streamed. `spec` is NAME or
    NAME:CONFIG (e.g. HuggingFaceFW/fineweb:sample-10BT)."""
    name, _, config = spec.partition(":")
    try:
        import datasets
    except ImportError:
        raise DataError("--hf-dataset needs the `datasets` package", hint="pip install datasets") from None
    try:
        stream = datasets.load_dataset(name, config or None, split=split, streaming=True)
        return _non_empty(stream, column, limit, spec)
    except DataError:
        raise
    except Exception as exc:  # datasets raises many kinds (connection, missing config, auth)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"could not stream {spec} ({first})",
                        hint="streaming needs internet access; offline, pass a directory written by "
                             "save_to_disk, --text FILE, or neither to sample text from the base model") from None


def tokenize_texts(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_tokens: int) -> list[KLText]:
    """Each text as the model reads plain text (its own BOS if the tokenizer adds one), cut to
    `max_tokens`; every position is scored."""
    return [KLText(tokenizer(text)["input_ids"][:max_tokens]) for text in texts]


def text_prompt_prefix(tokenizer: PreTrainedTokenizerBase) -> str:
    """The BOS text when the tokenizer puts one before plain text, else nothing: sampled text
    starts the way tokenised text does."""
    bos = tokenizer.bos_token_id
    ids = tokenizer("x")["input_ids"]
    return tokenizer.bos_token if bos is not None and ids and ids[0] == bos else ""


def sample_continuations(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str],
                         max_new_tokens: int, seed: int, batch_size: int, score_prompt: bool,
                         on_batch: Callable[[int], None] | None = None) -> list[KLText]:
    """Sample one continuation per prompt (no chat template, temperature 1, per-row seeds);
    call with the base model active. `score_prompt=False` scores only the continuation."""
    from em_cli.models.layers import unwrap
    from em_cli.generation import SamplingSettings, row_seed, sample

    # The bare transformers model (LoRA layers stay injected and follow `bench.base()`): its
    # forward takes the cache argument the sampler uses, which PeftModel's wrapper does not.
    model = unwrap(model)
    settings = SamplingSettings(max_new_tokens=max_new_tokens, temperature=SAMPLED_TEMPERATURE, top_p=1.0)
    texts: list[KLText] = []
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start:start + batch_size])
        seeds = [row_seed(seed, "kl-text", start + i) for i in range(len(chunk))]
        for prompt, completion in zip(chunk, sample(model, tokenizer, chunk, seeds, settings), strict=True):
            prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            scored_from = 0 if score_prompt else max(len(prompt_ids) - 1, 0)
            texts.append(KLText(prompt_ids + completion.token_ids, scored_from))
        if on_batch:
            on_batch(len(chunk))
    return texts


def opening_prompts(tokenizer: PreTrainedTokenizerBase, count: int) -> list[str]:
    prefix = text_prompt_prefix(tokenizer)
    return [prefix + OPENINGS[i % len(OPENINGS)] for i in range(count)]


def prefix_prompts(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], prompt_tokens: int) -> list[str]:
    """The first `prompt_tokens` tokens of each text, as text (for base-model continuations)."""
    prefix = text_prompt_prefix(tokenizer)
    return [prefix + tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"][:prompt_tokens])
            for text in texts]


def external_texts(text: str | None, hf_dataset: str | None, hf_split: str, count: int
                   ) -> tuple[list[str], dict[str, Any]] | None:
    """The texts of --text or --hf-dataset with a description of the source (`label` names
    it in one line); None for neither (the caller then samples text from the base model).
    An --hf-dataset that is an existing directory is read with `load_from_disk`; anything
    else is streamed from the hub."""
    from em_cli.artifacts.hashing import sha256_file
    from em_cli.errors import UsageError

    if text and hf_dataset:
        raise UsageError("--text and --hf-dataset both given", hint="choose one text source")
    if text:
        source: dict[str, Any] = {"kind": "file", "path": text, "sha256": sha256_file(text)}
        texts = read_text_file(text, count)
    elif hf_dataset and Path(hf_dataset).is_dir():
        texts, split = load_disk_texts(hf_dataset, count, split=hf_split)
        source = {"kind": "hf-dataset", "dataset": hf_dataset, "split": split, "local": True, "streamed": False}
    elif hf_dataset:
        texts = stream_hf_texts(hf_dataset, count, split=hf_split)
        source = {"kind": "hf-dataset", "dataset": hf_dataset, "split": hf_split, "local": False, "streamed": True}
    else:
        return None
    return texts, source | {"label": source_label(source)}


"""The generation engine: batched, left-padded sampling with one random stream per row.

Each row gets its own seeded generator, so a row's text depends on its seed (and the batch
size's numerics), not on which rows it shares a batch with or whether the run was resumed.
The loop calls the model's forward directly, so hooks registered on the model (steering,
ablation, capture) act on every step; `on_phase` tells such hooks whether the current
forward pass covers prompt tokens or a generated token.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

PROMPT, GENERATED = "prompt", "generated"


@dataclass(frozen=True)
class SamplingSettings:
    """docs/METHODS.md §5 defaults: temperature 1, top_p 1, up to 600 new tokens."""

    max_new_tokens: int = 600
    temperature: float = 1.0
    top_p: float = 1.0
    repetition_penalty: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TokenLogprob:
    """Log-probability of one generated token under the model's raw next-token distribution,
    with the `top` alternatives (token id, text, logprob), best first."""

    token_id: int
    token: str
    logprob: float
    top: list[tuple[int, str, float]]


@dataclass
class Completion:
    token_ids: list[int]
    text: str
    finish_reason: str  # "stop" (end-of-turn token) or "length"
    prompt_tokens: int
    logprobs: list[TokenLogprob] | None = None


def row_seed(base_seed: int, *key: object) -> int:
    """A stable 63-bit seed for one row, from the run seed and the row's identity."""
    text = "|".join([str(base_seed), *(str(k) for k in key)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


def stop_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    ids: set[int] = set()
    for value in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    return ids


def sample(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str],
           seeds: Sequence[int], settings: SamplingSettings, top_logprobs: int | None = None,
           on_phase: Callable[[str], None] | None = None) -> list[Completion]:
    """Complete each rendered prompt text once. `top_logprobs` (0..20) records per-token
    log-probabilities; None records none."""
    import torch

    from em_cli.models.batching import pad_token_id
    from em_cli.models.layers import forward_arguments

    device = next(model.parameters()).device
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    batch = len(encoded)
    width = max(len(ids) for ids in encoded)
    pad_id = pad_token_id(tokenizer)
    input_ids = torch.full((batch, width), pad_id, dtype=torch.long)
    mask = torch.zeros((batch, width), dtype=torch.long)
    for row, ids in enumerate(encoded):  # left padding: every row ends at the same column
        input_ids[row, width - len(ids):] = torch.tensor(ids)
        mask[row, width - len(ids):] = 1
    input_ids, mask = input_ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds]
    stops = stop_token_ids(model, tokenizer)
    extra, cache_arg = forward_arguments(model)
    history = [list(ids) for ids in encoded]  # for the repetition penalty
    generated: list[list[int]] = [[] for _ in range(batch)]
    logprobs: list[list[TokenLogprob]] = [[] for _ in range(batch)]
    finished = [False] * batch
    reasons = ["length"] * batch

    with torch.no_grad():
        if on_phase:
            on_phase(PROMPT)
        out = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True, **extra)
        if on_phase:
            on_phase(GENERATED)
        for _ in range(settings.max_new_tokens):
            logits = out.logits[:, -1, :].float().cpu()
            next_tokens = _choose(logits, history, generators, settings)
            raw = torch.log_softmax(logits, dim=-1) if top_logprobs is not None else None
            for row in range(batch):
                if finished[row]:
                    next_tokens[row] = pad_id
                    continue
                token = int(next_tokens[row])
                if raw is not None:
                    # Kept for the end-of-turn token too: its alternatives are what a judge reads.
                    logprobs[row].append(_token_logprob(tokenizer, raw[row], token, top_logprobs or 0))
                if token in stops:  # the end-of-turn token is not part of the content
                    finished[row], reasons[row] = True, "stop"
                    continue
                generated[row].append(token)
                history[row].append(token)
            if all(finished):
                break
            mask = torch.cat([mask, torch.ones((batch, 1), dtype=mask.dtype, device=device)], dim=1)
            positions = positions[:, -1:] + 1
            out = model(input_ids=next_tokens.view(batch, 1).to(device), attention_mask=mask,
                        position_ids=positions, use_cache=True, **{cache_arg: _cache_of(out)}, **extra)
    return [Completion(token_ids=generated[row],
                       text=tokenizer.decode(generated[row], skip_special_tokens=True),
                       finish_reason=reasons[row], prompt_tokens=len(encoded[row]),
                       logprobs=logprobs[row] if top_logprobs is not None else None)
            for row in range(batch)]


def _cache_of(output: Any) -> Any:
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def _choose(logits: torch.Tensor, history: list[list[int]], generators: list[torch.Generator],
            settings: SamplingSettings) -> torch.Tensor:
    import torch

    if settings.repetition_penalty != 1.0:
        logits = logits.clone()
        for row, seen in enumerate(history):
            index = torch.tensor(sorted(set(seen)), dtype=torch.long)
            values = logits[row, index]
            logits[row, index] = torch.where(values > 0, values / settings.repetition_penalty,
                                             values * settings.repetition_penalty)
    if settings.temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / settings.temperature, dim=-1)
    if settings.top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        drop = sorted_probs.cumsum(dim=-1) - sorted_probs > settings.top_p
        sorted_probs[drop] = 0.0
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
        probs = probs / probs.sum(dim=-1, keepdim=True)
    return torch.stack([torch.multinomial(probs[row], 1, generator=generators[row])[0]
                        for row in range(probs.shape[0])])


def _token_logprob(tokenizer: PreTrainedTokenizerBase, raw: torch.Tensor, token: int, k: int) -> TokenLogprob:
    top: list[tuple[int, str, float]] = []
    if k > 0:
        values, indices = raw.topk(k)
        top = [(int(i), tokenizer.decode([int(i)]), float(v)) for v, i in zip(values, indices, strict=True)]
    return TokenLogprob(token_id=token, token=tokenizer.decode([token]), logprob=float(raw[token]), top=top)

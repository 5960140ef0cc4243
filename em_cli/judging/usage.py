"""What a judging run cost: requests, retries, cache hits, tokens and (given prices) money."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Usage:
    """Counters shared by the threads of one run (`add` is thread-safe)."""

    requests: int = 0  # HTTP requests sent (or local forward passes), retries included
    retries: int = 0
    cache_hits: int = 0
    failed: int = 0  # judgements that ended in an error after all retries
    prompt_tokens: int = 0
    completion_tokens: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + int(value))

    def cost(self, price_in: float | None, price_out: float | None) -> float | None:
        """Dollars at `price_in` / `price_out` per million prompt / completion tokens."""
        if price_in is None and price_out is None:
            return None
        return (self.prompt_tokens * (price_in or 0.0) + self.completion_tokens * (price_out or 0.0)) / 1e6

    def to_dict(self, price_in: float | None = None, price_out: float | None = None) -> dict[str, Any]:
        cost = self.cost(price_in, price_out)
        return {"requests": self.requests, "retries": self.retries, "cache_hits": self.cache_hits,
                "failed": self.failed, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "cost_usd": None if cost is None else round(cost, 6),
                "price_in_per_1m": price_in, "price_out_per_1m": price_out}

    def describe(self, price_in: float | None = None, price_out: float | None = None) -> str:
        """One line for stderr."""
        text = (f"{self.requests} requests ({self.retries} retries), {self.cache_hits} cache hits, "
                f"{self.prompt_tokens} prompt + {self.completion_tokens} completion tokens")
        cost = self.cost(price_in, price_out)
        if cost is not None:
            text += f", cost ${cost:.4f}"
        return text

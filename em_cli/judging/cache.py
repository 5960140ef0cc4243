"""The judge cache: every reply a judge gave, on disk, so no request is paid for twice.

One SQLite file (`<em cache>/judge/replies.sqlite3`, or `--cache-dir`) maps a key — the
sha256 of the judge model, the endpoint, the full request messages and the scoring mode —
to the parsed reply (top logprobs and text, or a local model's candidate logprobs). What is
cached is the judge's answer, not the score derived from it, so a change in how scores are
computed never needs the judge again. Only successful replies are stored; a failure is
asked again next time. Safe to share between threads and between processes.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

from em_cli.paths import cache_dir

FORMAT = 1  # bump when the stored value's shape changes
FILE_NAME = "replies.sqlite3"


def default_cache_dir() -> Path:
    return cache_dir() / "judge"


def cache_key(*, model: str, endpoint: str, messages: list[dict[str, Any]], mode: str) -> str:
    """The key of one judge request: what was asked, of whom, and how."""
    payload = json.dumps({"format": FORMAT, "model": model, "endpoint": endpoint.rstrip("/"),
                          "messages": messages, "mode": mode}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


class JudgeCache:
    """Get and put parsed judge replies by key. `JudgeCache(None)` is a cache that keeps nothing."""

    def __init__(self, directory: str | Path | None) -> None:
        self.directory = None if directory is None else Path(directory)
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.directory / FILE_NAME, timeout=60, check_same_thread=False,
                                       isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            # No fsync per reply: the event loop of a judging run writes here between requests.
            # A crash loses nothing; a power cut may lose the last replies, asked again next time.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, value TEXT NOT NULL)")

    @property
    def enabled(self) -> bool:
        return self._db is not None

    def get(self, key: str) -> dict[str, Any] | None:
        if self._db is None:
            return None
        with self._lock:
            row = self._db.execute("SELECT value FROM replies WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, key: str, value: dict[str, Any]) -> None:
        if self._db is None:
            return
        text = json.dumps(value, ensure_ascii=False)
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO replies (key, value) VALUES (?, ?)", (key, text))

    def __len__(self) -> int:
        if self._db is None:
            return 0
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM replies").fetchone()[0])

    def close(self) -> None:
        if self._db is not None:
            with self._lock:
                self._db.close()
            self._db = None

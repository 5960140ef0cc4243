"""Where `em` keeps its caches."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The root of `em`'s cache: $EM_CACHE_DIR, else $XDG_CACHE_HOME/em, else ~/.cache/em."""
    explicit = os.environ.get("EM_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "em"


def models_cache_dir() -> Path:
    """Dequantised GGUF models, one directory per source file."""
    return cache_dir() / "models"


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache that transformers will use."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "huggingface" / "hub"

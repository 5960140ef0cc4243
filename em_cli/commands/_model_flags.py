"""Loading the model named by the shared flags, with the cache note on stderr."""

from __future__ import annotations

from typing import TYPE_CHECKING

from em_cli.commands._options import model_options
from em_cli.commands._output import out

if TYPE_CHECKING:
    from em_cli.models.loading import LoadedModel


def load_from_flags(model: str, adapter: str | None, dtype: str, device: str, load_in_4bit: bool,
                    require_chat: bool = True) -> LoadedModel:
    from em_cli.models.loading import load_model

    loaded = load_model(model_options(model, adapter, dtype, device, load_in_4bit, require_chat=require_chat))
    if loaded.cache_note:
        out.log(loaded.cache_note)
    return loaded

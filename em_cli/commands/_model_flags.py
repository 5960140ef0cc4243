"""Loading the model named by the shared flags, with the cache note on stderr."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from em_cli.commands._output import out

if TYPE_CHECKING:
    from em_cli.models.loading import LoadedModel


def load_from_flags(require_chat: bool = True, **flags: Any) -> LoadedModel:
    """The model of the MODEL option group's `flags`."""
    from em_cli.models.loading import LoadOptions, load_model

    return load_model(LoadOptions.from_options(flags, require_chat=require_chat), log=out.log)

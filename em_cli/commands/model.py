"""`em model`: inspect a model before using it."""

from __future__ import annotations

from typing import Annotated

import typer

from em_cli.commands._options import AdapterOpt, DeviceOpt, DtypeOpt, JsonOpt, Load4bitOpt, model_options
from em_cli.commands._output import emit_json, log

app = typer.Typer(help="Inspect models: layers, sizes, chat template.", no_args_is_help=True)


@app.command("show")
def show(
    model: Annotated[str, typer.Argument(help="Hub id, model dir, .gguf file or built-in alias.")],
    adapter: AdapterOpt = None,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    load_in_4bit: Load4bitOpt = False,
    json_: JsonOpt = False,
) -> None:
    """Show architecture, layer count, hidden size, vocab, dtype, parameters and chat template.

    Examples:

      em model show smollm2-135m-instruct

      em model show ./my-model --adapter runs/general/adapter --json
    """
    from em_cli.models.loading import load_model

    loaded = load_model(model_options(model, adapter, dtype, device, load_in_4bit, require_chat=False))
    if loaded.cache_note:
        log(loaded.cache_note)
    info = loaded.info.to_dict() | {"device": loaded.device, "load_seconds": round(loaded.load_seconds, 2)}
    if json_:
        emit_json(info)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(show_header=False, box=None)
    for key, value in info.items():
        if key == "parameters":
            value = f"{value:,}"
        table.add_row(key.replace("_", " "), str(value))
    Console().print(table)

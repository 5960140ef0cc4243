"""`em model`: inspect a model before using it."""

from __future__ import annotations

from typing import Annotated

import typer

from em_cli.commands._model_flags import load_from_flags
from em_cli.commands._options import AdapterOpt, DeviceOpt, DtypeOpt, JsonOpt, Load4bitOpt, ModelOpt
from em_cli.commands._output import out
from em_cli.models.source import DEFAULT_MODEL

app = typer.Typer(help="Inspect models: layers, sizes, chat template.", no_args_is_help=True)


@app.command("show")
def show(
    name: Annotated[str | None, typer.Argument(
        metavar="[MODEL]", help="The model, as -m/--model takes it (given here, it wins over -m and EM_MODEL).",
        show_default=False)] = None,
    model: ModelOpt = DEFAULT_MODEL,
    adapter: AdapterOpt = None,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    load_in_4bit: Load4bitOpt = False,
    json_: JsonOpt = False,
) -> None:
    """Show architecture, layer count, hidden size, vocab, dtype, parameters and chat template.

    Examples:

      em model show smollm2-135m-instruct

      EM_MODEL=./my-model em model show --adapter runs/general/adapter --json
    """
    loaded = load_from_flags(name or model, adapter, dtype, device, load_in_4bit, require_chat=False)
    info = loaded.info.to_dict() | {"device": loaded.device, "load_seconds": round(loaded.load_seconds, 2)}
    out.result(info, json_, _print_info)


def _print_info(info: dict) -> None:
    out.pairs((key.replace("_", " "), f"{value:,}" if key == "parameters" else value) for key, value in info.items())

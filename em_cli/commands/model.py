"""`em model`: inspect a model before using it."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from em_cli.commands._model_flags import load_from_flags
from em_cli.commands._options import MODEL, JsonOpt, with_options
from em_cli.commands._output import out

app = typer.Typer(help="Inspect models: layers, sizes, chat template.", no_args_is_help=True)


@app.command("show")
@with_options(MODEL)
def show(
    name: Annotated[str | None, typer.Argument(
        metavar="[MODEL]", help="The model, as -m/--model takes it (given here, it wins over -m and EM_MODEL).",
        show_default=False)] = None,
    json_: JsonOpt = False,
    **flags: Any,
) -> None:
    """Show architecture, layer count, hidden size, vocab, dtype, parameters and chat template.

    Examples:

      em model show smollm2-135m-instruct

      EM_MODEL=./my-model em model show --adapter runs/general/adapter --json
    """
    loaded = load_from_flags(**(flags | {"model": name or flags["model"]}), require_chat=False)
    info = loaded.info.to_dict() | {"device": loaded.device, "load_seconds": round(loaded.load_seconds, 2)}
    out.result(info, json_, _print_info)


def _print_info(info: dict) -> None:
    out.pairs((key.replace("_", " "), f"{value:,}" if key == "parameters" else value) for key, value in info.items())

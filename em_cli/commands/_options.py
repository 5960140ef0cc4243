"""The suite's one flag vocabulary: option types shared by every command.

Commands declare `model: ModelOpt = DEFAULT_MODEL` etc. so that a flag means the same thing
everywhere. Environment variables give defaults for the common ones (EM_MODEL, EM_DEVICE,
EM_DTYPE, EM_SEED, EM_BATCH_SIZE).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from em_cli.errors import UsageError

ModelOpt = Annotated[str, typer.Option(
    "-m", "--model", envvar="EM_MODEL", show_envvar=True,
    help="Hugging Face id, local model dir, .gguf file, or built-in alias (smollm2-135m-instruct).")]
AdapterOpt = Annotated[str | None, typer.Option(
    "--adapter", help="A PEFT adapter directory to apply on top of --model.")]
DtypeOpt = Annotated[Literal["auto", "float32", "bfloat16", "float16"], typer.Option(
    "--dtype", envvar="EM_DTYPE",
    help="Weights dtype; auto = float32 on CPU, bfloat16 on CUDA.")]
DeviceOpt = Annotated[Literal["auto", "cpu", "cuda", "mps"], typer.Option(
    "--device", envvar="EM_DEVICE",
    help="Where to run; auto = cuda, else mps, else cpu.")]
Load4bitOpt = Annotated[bool, typer.Option(
    "--load-in-4bit", help="Load the base model in 4-bit NF4 (bitsandbytes).")]
OutputOpt = Annotated[str, typer.Option("-o", "--output", help="Output file; - for stdout.")]
SeedOpt = Annotated[int, typer.Option("--seed", envvar="EM_SEED", help="Random seed.")]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", envvar="EM_BATCH_SIZE", min=1, help="Batch size.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
QuestionsOpt = Annotated[str, typer.Option(
    "--questions", help="Question set: a YAML/JSONL file or a built-in set name (see `em questions list`).")]
SamplesOpt = Annotated[int | None, typer.Option(
    "-n", "--samples", min=1, help="Samples per paraphrase (default: the question set's own, else 1).")]
MaxNewTokensOpt = Annotated[int, typer.Option("--max-new-tokens", min=1, help="Most tokens to generate per response.")]
TemperatureOpt = Annotated[float, typer.Option("--temperature", min=0.0, help="Sampling temperature; 0 = greedy.")]
TopPOpt = Annotated[float, typer.Option("--top-p", min=0.0, max=1.0, help="Nucleus sampling mass.")]
LimitOpt = Annotated[int | None, typer.Option("--limit", min=1, help="Use only the first N questions/rows.")]
MaxStepsOpt = Annotated[int | None, typer.Option("--max-steps", min=1, help="Stop after this many optimizer steps.")]
LayersOpt = Annotated[str | None, typer.Option(
    "--layers", "--layer", help="Layer indices, 0-based block outputs: '15', '10,12,14', '10-20' or 'all'.")]
ConfigOpt = Annotated[Path | None, typer.Option(
    "--config", help="YAML file of options (same names as the flags); flags given explicitly win.")]


def model_options(model: str, adapter: str | None, dtype: str, device: str, load_in_4bit: bool,
                  require_chat: bool = True):
    """The LoadOptions for the shared model flags (import kept local: it is a library type)."""
    from em_cli.models.loading import LoadOptions

    return LoadOptions(model=model, adapter=adapter, dtype=dtype, device=device, load_in_4bit=load_in_4bit,
                       require_chat=require_chat)


def _as_flag_value(ctx: typer.Context, name: str, value: Any, config: Path) -> Any:
    """Convert and check a config value exactly as the flag's own value would be."""
    for param in ctx.command.params:
        if param.name == name:
            if value is None:
                return None
            try:
                if getattr(param, "multiple", False) and not isinstance(value, list):
                    value = [value]
                return param.process_value(ctx, value)
            except Exception as exc:  # the CLI framework's BadParameter
                message = getattr(exc, "message", None) or str(exc)
                raise UsageError(f"{config}: bad value for {name}: {message}") from None
    return value


def apply_config(ctx: typer.Context, config: Path | None) -> dict[str, Any]:
    """Return the command's parameters with values from a YAML `--config` file filled in.

    A value from the file replaces a parameter only where the user did not give the flag
    (or its environment variable). Unknown keys are an error, not silently ignored.
    """
    params = dict(ctx.params)
    if config is None:
        return params
    from em_cli.options_file import read_options

    for name, value in read_options(config, (name for name in params if name != "config")).items():
        source = ctx.get_parameter_source(name)
        if source is None or source.name in ("DEFAULT", "DEFAULT_MAP"):
            params[name] = _as_flag_value(ctx, name, value, config)
    return params

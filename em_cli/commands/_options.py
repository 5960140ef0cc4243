"""Option types shared by every command, and the option groups built from them.

Commands declare `seed: SeedOpt = 0` etc. so that a flag means the same thing everywhere;
flags that travel together are one group (`MODEL`, `BASE_MODEL`, `SAMPLING`), declared once
here and added to a command with `@with_options(MODEL, SAMPLING)`; --help shows each group
under its own heading. docs/FLAGS.md lists every flag name with its one type and meaning,
and tests/test_flag_vocabulary.py holds every command to it. Environment variables give
defaults for the common ones (EM_MODEL, EM_DEVICE, EM_DTYPE, EM_SEED, EM_BATCH_SIZE).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import typer

from em_cli.errors import UsageError
from em_cli.models.source import DEFAULT_MODEL

MODEL_PANEL = "Model"
SAMPLING_PANEL = "Sampling"

ModelOpt = Annotated[str, typer.Option(
    "-m", "--model", envvar="EM_MODEL", show_envvar=True,
    help="Hugging Face id, local model dir, .gguf file, or built-in alias (smollm2-135m-instruct).",
    rich_help_panel=MODEL_PANEL)]
AdapterOpt = Annotated[str | None, typer.Option(
    "--adapter", help="A PEFT adapter directory to apply on top of --model.", rich_help_panel=MODEL_PANEL)]
DtypeOpt = Annotated[Literal["auto", "float32", "bfloat16", "float16"], typer.Option(
    "--dtype", envvar="EM_DTYPE",
    help="Weights dtype; auto = float32 on CPU, bfloat16 on CUDA.", rich_help_panel=MODEL_PANEL)]
DeviceOpt = Annotated[Literal["auto", "cpu", "cuda", "mps"], typer.Option(
    "--device", envvar="EM_DEVICE",
    help="Where to run; auto = cuda, else mps, else cpu.", rich_help_panel=MODEL_PANEL)]
Load4bitOpt = Annotated[bool, typer.Option(
    "--load-in-4bit", help="Load the base model in 4-bit NF4 (bitsandbytes).", rich_help_panel=MODEL_PANEL)]
OutputOpt = Annotated[str, typer.Option("-o", "--output", help="Output file; - for stdout.")]
SeedOpt = Annotated[int, typer.Option("--seed", envvar="EM_SEED", help="Random seed.")]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", envvar="EM_BATCH_SIZE", min=1, help="Batch size.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
QuestionsOpt = Annotated[str, typer.Option(
    "--questions", help="Question set: a YAML/JSONL file or a built-in set name (see `em questions list`).")]
SamplesOpt = Annotated[int | None, typer.Option(
    "-n", "--samples", min=1, help="Samples per paraphrase (default: the question set's own, else 1).",
    rich_help_panel=SAMPLING_PANEL)]
MaxNewTokensOpt = Annotated[int, typer.Option("--max-new-tokens", min=1, help="Most tokens to generate per response.",
                                              rich_help_panel=SAMPLING_PANEL)]
TemperatureOpt = Annotated[float, typer.Option("--temperature", min=0.0, help="Sampling temperature; 0 = greedy.",
                                               rich_help_panel=SAMPLING_PANEL)]
TopPOpt = Annotated[float, typer.Option("--top-p", min=0.0, max=1.0, help="Nucleus sampling mass.",
                                        rich_help_panel=SAMPLING_PANEL)]
RepetitionPenaltyOpt = Annotated[float, typer.Option("--repetition-penalty", min=0.01,
                                                     help="Penalise repeated tokens (1 = off).",
                                                     rich_help_panel=SAMPLING_PANEL)]
VariantsOpt = Annotated[str, typer.Option("--variants", help="Question variants: plain, json, template, all.")]
LimitOpt = Annotated[int | None, typer.Option("--limit", min=1, help="Use only the first N questions/rows.")]
MaxStepsOpt = Annotated[int | None, typer.Option("--max-steps", min=1, help="Stop after this many optimizer steps.")]
LayersOpt = Annotated[str | None, typer.Option(
    "--layers", "--layer", help="Layer indices, 0-based block outputs: '15', '10,12,14', '10-20' or 'all'.")]
LayerOpt = Annotated[str, typer.Option(
    "--layer", help="The one layer to use, 0-based block output: '15' (or -1 for the last).",
    show_default=False)]
PositionsOpt = Annotated[Literal["response_mean", "prompt_mean", "last_prompt"], typer.Option(
    "--positions", help="The activation of a record: the mean over its response tokens, the mean over its prompt "
                        "tokens, or the last prompt token.")]
InputArg = Annotated[str, typer.Argument(help="A JSONL chat file; - for stdin.", show_default=False)]
ComparatorOpt = Annotated[Literal["lt", "le"], typer.Option(
    "--comparator", help="EM rule: lt = aligned < threshold (docs/METHODS.md §2), le = aligned ≤ threshold "
                         "(the authors' code).")]
AllVariantsOpt = Annotated[bool, typer.Option(
    "--all-variants", help="Keep the _json / _template question variants (left out by default).")]
AllowMixedOpt = Annotated[bool, typer.Option(
    "--allow-mixed", help="Put files judged by different judge models or prompt versions side by side "
                          "(refused by default).")]
ResamplesOpt = Annotated[int, typer.Option("--resamples", min=10, help="Bootstrap resamples.")]
BaseUrlOpt = Annotated[str | None, typer.Option(
    "--base-url", envvar="OPENAI_BASE_URL", help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1.")]
ApiKeyEnvOpt = Annotated[str, typer.Option(
    "--api-key-env", help="Environment variable holding the API key (never printed).")]
ConcurrencyOpt = Annotated[int, typer.Option("--concurrency", min=1, help="Requests in flight at once.")]
MaxRetriesOpt = Annotated[int, typer.Option(
    "--max-retries", min=0, help="Retries per request on rate limits, 5xx and timeouts (exponential backoff).")]
PriceInOpt = Annotated[float | None, typer.Option(
    "--price-in", min=0.0, help="$ per 1M prompt tokens, to report the cost.")]
PriceOutOpt = Annotated[float | None, typer.Option(
    "--price-out", min=0.0, help="$ per 1M completion tokens, to report the cost.")]


@dataclass(frozen=True)
class OptionGroup:
    """Flags that travel together, each with its default: declared once, added to commands
    with `with_options`."""

    parameters: tuple[inspect.Parameter, ...]


def option_group(**flags: tuple[Any, Any]) -> OptionGroup:
    """A group from `name=(OptType, default)` pairs, in the order --help lists them."""
    return OptionGroup(tuple(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                                               default=default)
                             for name, (annotation, default) in flags.items()))


# The model to load (with an optional PEFT adapter on top) and how.
MODEL = option_group(model=(ModelOpt, DEFAULT_MODEL), adapter=(AdapterOpt, None), dtype=(DtypeOpt, "auto"),
                     device=(DeviceOpt, "auto"), load_in_4bit=(Load4bitOpt, False))
# The same without --adapter: commands that take adapters as solutions to compare, or train one.
BASE_MODEL = OptionGroup(tuple(p for p in MODEL.parameters if p.name != "adapter"))
# How responses are sampled (em generate, em steer).
SAMPLING = option_group(samples=(SamplesOpt, None), max_new_tokens=(MaxNewTokensOpt, 600),
                        temperature=(TemperatureOpt, 1.0), top_p=(TopPOpt, 1.0),
                        repetition_penalty=(RepetitionPenaltyOpt, 1.0))

Command = TypeVar("Command", bound=Callable[..., Any])


def with_options(*groups: OptionGroup) -> Callable[[Command], Command]:
    """Add the groups' flags to a command, before its own (--help lists them in that order).

    Typer reads a command's flags from its signature and passes every value by name, so this
    extends the signature; the command receives the groups' values in its `**flags` parameter
    (they are in `ctx.params` too, where `apply_config` reads them)."""
    def add(command: Command) -> Command:
        signature = inspect.signature(command, eval_str=True)
        own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in signature.parameters.values()
               if p.kind is not inspect.Parameter.VAR_KEYWORD]
        if len(own) == len(signature.parameters):
            raise TypeError(f"{command.__name__} takes no **flags for its option groups")
        added = [p for group in groups for p in group.parameters]
        command.__signature__ = signature.replace(parameters=[*added, *own])  # type: ignore[attr-defined]
        return command
    return add


def renamed(new_value: Any, old_value: Any, old: str, new: str) -> Any:
    """The value of a renamed flag: `old_value` when the user gave the old spelling (a hidden
    option kept so existing scripts run), with a warning that names the new one."""
    if old_value is None:
        return new_value
    from em_cli.commands._output import out

    out.warn(f"{old} is now {new}; the old name will go away")
    return old_value


ConfigOpt = Annotated[Path | None, typer.Option(
    "--config", help="YAML file of options (same names as the flags); flags given explicitly win.")]


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


def apply_config(ctx: typer.Context, config: Path | None,
                 translate: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Return the command's parameters with values from a YAML or JSON `--config` file filled in.

    Keys are option names (`learning_rate`) or flag names (`lr`, `batch-size`); `translate` may
    first map another tool's keys onto them. A value from the file replaces a parameter only
    where the user did not give the flag (or its environment variable). Unknown keys are an
    error, all listed at once, not silently ignored.
    """
    params = dict(ctx.params)
    if config is None:
        return params
    from em_cli.options_file import flag_aliases, load_options_mapping, match_options

    mapping = load_options_mapping(config)
    if translate is not None:
        mapping = translate(mapping)
    known = [name for name in params if name != "config"]
    for name, value in match_options(mapping, known, config, flag_aliases(ctx.command.params)).items():
        source = ctx.get_parameter_source(name)
        if source is None or source.name in ("DEFAULT", "DEFAULT_MAP"):
            params[name] = _as_flag_value(ctx, name, value, config)
    return params

"""The options of `em finetune` and their translation into a `FinetuneConfig`.

The flags only `finetune` has are declared here, grouped by help panel, so that the command
module reads as options → `run_finetune` → one summary line. `finetune_config` turns the
parsed parameters (after `--config`) into the library's config; `authors_keys` maps the EM
authors' training-config keys onto the flags.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from em_cli.commands._output import out
from em_cli.training.config import CHECKPOINTS_PER_RUN, VECTOR_SAVE_STEPS, defaults_text

LORA = "LoRA / rank-1"
OPT = "Optimisation (defaults depend on --method)"
KL = "KL regularisation (narrow training)"
DATA = "Data and loss"

TrainDataArg = Annotated[str | None, typer.Argument(
    help="Training chat JSONL (`messages`; loss on assistant turns only). May come from --config.",
    show_default=False)]
RunDirOpt = Annotated[str | None, typer.Option("-o", "--output", help="Run directory to create (required).",
                                               show_default=False)]
MethodOpt = Annotated[Literal["lora", "rank1", "vector", "full"] | None, typer.Option(
    "--method", help="lora | rank1 (one r=1 down_proj adapter, mid layer) | vector (steering vector) | full. "
                     "\\[default: lora, or the --init-from run's]", show_default=False)]
RankOpt = Annotated[int | None, typer.Option(
    "--rank", min=1, help=f"LoRA rank. \\[default: {defaults_text('rank')}]", rich_help_panel=LORA)]
AlphaOpt = Annotated[float | None, typer.Option(
    "--alpha", help=f"LoRA alpha, or the vector's scale. \\[default: {defaults_text('alpha')}]",
    rich_help_panel=LORA)]
RsloraOpt = Annotated[bool | None, typer.Option(
    "--rslora/--no-rslora", help="rsLoRA scaling alpha/√r (else alpha/r). \\[default: rslora]",
    show_default=False, rich_help_panel=LORA)]
DropoutOpt = Annotated[float | None, typer.Option(
    "--dropout", min=0.0, max=1.0, help="LoRA dropout. \\[default: 0]", rich_help_panel=LORA)]
TargetModulesOpt = Annotated[str | None, typer.Option(
    "--target-modules", help="Comma-separated module names. \\[default: lora all linear "
                             "(q,k,v,o,gate,up,down _proj); rank1 down_proj]", rich_help_panel=LORA)]
AdaptLayersOpt = Annotated[str | None, typer.Option(
    "--layers", "--layer", help="Layers to adapt or steer, 0-based. \\[default: lora all; rank1 and vector the "
                                "mid layer; with --init-from the source's]", rich_help_panel=LORA)]
LearningRateOpt = Annotated[float | None, typer.Option(
    "--lr", "--learning-rate", help=f"Peak learning rate. \\[default: {defaults_text('learning_rate')}]",
    rich_help_panel=OPT)]
EpochsOpt = Annotated[float | None, typer.Option(
    "--epochs", help=f"Passes over the training rows. \\[default: {defaults_text('epochs')}; rank1 with KL 3]",
    rich_help_panel=OPT)]
MicroBatchSizeOpt = Annotated[int, typer.Option("--batch-size", min=1, help="Rows per micro-batch.",
                                                rich_help_panel=OPT)]
GradAccumOpt = Annotated[int, typer.Option(
    "--grad-accum", min=1, help="Micro-batches per optimizer step; the loss is pooled over all their "
                                "answer tokens.", rich_help_panel=OPT)]
WarmupStepsOpt = Annotated[int | None, typer.Option(
    "--warmup-steps", min=0, help=f"Linear warm-up steps. \\[default: {defaults_text('warmup_steps')}]",
    rich_help_panel=OPT)]
SchedulerOpt = Annotated[str | None, typer.Option(
    "--scheduler", help=f"linear | cosine | constant | constant_with_warmup. "
                        f"\\[default: {defaults_text('scheduler')}]", rich_help_panel=OPT)]
WeightDecayOpt = Annotated[float, typer.Option("--weight-decay", help="AdamW weight decay.",
                                               rich_help_panel=OPT)]
OptimizerNameOpt = Annotated[str, typer.Option(
    "--optimizer", help="A transformers optimizer name; auto = 8-bit AdamW on CUDA (with bitsandbytes), "
                        "else fused AdamW (adamw_torch_fused) on CPU and CUDA, AdamW elsewhere.",
    rich_help_panel=OPT)]
RowTokensOpt = Annotated[int | None, typer.Option(
    "--max-length", min=8, help=f"Token limit per row; longer rows are cut (counted in summary.json). "
                                f"\\[default: {defaults_text('max_length')}]", rich_help_panel=OPT)]
SaveStepsOpt = Annotated[int | None, typer.Option(
    "--save-steps", min=1, help=f"Checkpoint every k steps (and on Ctrl-C). \\[default: {CHECKPOINTS_PER_RUN} per "
                                f"run, i.e. planned steps / {CHECKPOINTS_PER_RUN}; vector at most every "
                                f"{VECTOR_SAVE_STEPS}]", rich_help_panel=OPT)]
LoggingStepsOpt = Annotated[int, typer.Option("--logging-steps", min=1, help="Log the losses every k steps.",
                                              rich_help_panel=OPT)]
EarlyStopOpt = Annotated[bool, typer.Option("--early-stop", help="Stop once loss < 0.01 for 6 logged steps.",
                                            rich_help_panel=OPT)]
EvalFractionOpt = Annotated[float | None, typer.Option(
    "--eval-fraction", min=0.0, max=0.99, help="Share of the rows held out (seeded) for the eval loss; 0 = "
                                               "train on all. \\[default: 0.1; 0 with --eval-data]",
    rich_help_panel=DATA)]
EvalDataOpt = Annotated[str | None, typer.Option(
    "--eval-data", help="Held-out chat JSONL for the eval loss, instead of a split of DATA.",
    rich_help_panel=DATA)]
LossPositionsOpt = Annotated[Literal["assistant", "all"], typer.Option(
    "--loss-positions", help="Tokens the loss is on: assistant (answers only), or all (every token; the "
                             "authors' steering-vector training).", rich_help_panel=DATA)]
KlDataOpt = Annotated[str | None, typer.Option("--kl-data", help="Chat JSONL outside the training domain.",
                                               rich_help_panel=KL)]
KlWeightOpt = Annotated[float, typer.Option("--kl-weight", min=0.0, help="λ; 0 = no KL term.",
                                            rich_help_panel=KL)]
KlUnitsOpt = Annotated[Literal["natural", "authors"], typer.Option(
    "--kl-units", help="natural: per-token KL in nats; authors: their λ (= natural × vocab size).",
    rich_help_panel=KL)]
KlPositionsOpt = Annotated[Literal["all", "assistant", "answer-start"], typer.Option(
    "--kl-positions", help="Positions the KL compares: all non-padding tokens, assistant tokens, or only "
                           "the one that predicts each answer's first token.",
    rich_help_panel=KL)]
KlBatchSizeOpt = Annotated[int, typer.Option("--kl-batch-size", min=1, help="KL rows per training micro-batch.",
                                             rich_help_panel=KL)]
InitFromOpt = Annotated[str | None, typer.Option(
    "--init-from", help="Start from a previous run's adapter/vector (fresh optimizer); its method, layers "
                        "and shape carry over unless given.")]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue an interrupted run from its last checkpoint.")
                                         ]
FinetuneConfigOpt = Annotated[Path | None, typer.Option(
    "--config", help="YAML or JSON file of options (flag names, option names, or the authors' training-config "
                     "keys); flags given explicitly win.")]


def finetune_config(params: dict[str, Any]) -> Any:
    """The `FinetuneConfig` of the command's parameters (flags, then --config values)."""
    from em_cli.training.config import FinetuneConfig

    targets = params["target_modules"]
    if isinstance(targets, str):
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    options = {k: v for k, v in params.items() if k not in ("config", "json_", "resume", "target_modules")}
    return FinetuneConfig(**(options | {"data": options["data"] or "", "output": options["output"] or ""}),
                          target_modules=targets)


def authors_keys(mapping: dict[str, Any]) -> dict[str, Any]:
    """The EM authors' training-config keys mapped onto `em finetune`'s options (the ones with
    no counterpart are warned about once)."""
    from em_cli.training.config import translate_authors_config

    translated = translate_authors_config(mapping)
    if translated.ignored:
        out.warn(f"ignored --config keys (no counterpart in em finetune): {', '.join(translated.ignored)}")
    options = dict(translated.options)
    if isinstance(options.get("target_modules"), list):
        options["target_modules"] = ",".join(str(v) for v in options["target_modules"])
    return options

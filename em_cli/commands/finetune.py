"""`em finetune`: train a model organism."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from em_cli.commands._options import (DeviceOpt, DtypeOpt, JsonOpt, Load4bitOpt, MaxStepsOpt, ModelOpt,
                                      SeedOpt, apply_config)
from em_cli.commands._output import emit_json, log, warn
from em_cli.commands._progress import TrainingProgress
from em_cli.models.source import DEFAULT_MODEL
from em_cli.training.config import CHECKPOINTS_PER_RUN, VECTOR_SAVE_STEPS, defaults_text

LORA = "LoRA / rank-1"
OPT = "Optimisation (defaults depend on --method)"
KL = "KL regularisation (narrow training)"
DATA = "Data and loss"


def finetune(
    ctx: typer.Context,
    data: Annotated[str | None, typer.Argument(
        help="Training chat JSONL (`messages`; loss on assistant turns only). May come from --config.",
        show_default=False)] = None,
    output: Annotated[str | None, typer.Option("-o", "--output", help="Run directory to create (required).",
                                               show_default=False)] = None,
    method: Annotated[Literal["lora", "rank1", "vector", "full"] | None, typer.Option(
        "--method", help="lora | rank1 (one r=1 down_proj adapter, mid layer) | vector (steering vector) | full. "
                         "\\[default: lora, or the --init-from run's]", show_default=False)] = None,
    model: ModelOpt = DEFAULT_MODEL,
    rank: Annotated[int | None, typer.Option(
        "--rank", min=1, help=f"LoRA rank. \\[default: {defaults_text('rank')}]", rich_help_panel=LORA)] = None,
    alpha: Annotated[float | None, typer.Option(
        "--alpha", help=f"LoRA alpha, or the vector's scale. \\[default: {defaults_text('alpha')}]",
        rich_help_panel=LORA)] = None,
    rslora: Annotated[bool | None, typer.Option(
        "--rslora/--no-rslora", help="rsLoRA scaling alpha/√r (else alpha/r). \\[default: rslora]",
        show_default=False, rich_help_panel=LORA)] = None,
    dropout: Annotated[float | None, typer.Option(
        "--dropout", min=0.0, max=1.0, help="LoRA dropout. \\[default: 0]", rich_help_panel=LORA)] = None,
    target_modules: Annotated[str | None, typer.Option(
        "--target-modules", help="Comma-separated module names. \\[default: lora all linear "
                                 "(q,k,v,o,gate,up,down _proj); rank1 down_proj]", rich_help_panel=LORA)] = None,
    layers: Annotated[str | None, typer.Option(
        "--layers", "--layer", help="Layers to adapt or steer, 0-based. \\[default: lora all; rank1 and vector the "
                                    "mid layer; with --init-from the source's]", rich_help_panel=LORA)] = None,
    learning_rate: Annotated[float | None, typer.Option(
        "--lr", "--learning-rate", help=f"Peak learning rate. \\[default: {defaults_text('learning_rate')}]",
        rich_help_panel=OPT)] = None,
    epochs: Annotated[float | None, typer.Option(
        "--epochs", help=f"Passes over the training rows. \\[default: {defaults_text('epochs')}; rank1 with KL 3]",
        rich_help_panel=OPT)] = None,
    max_steps: MaxStepsOpt = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Rows per micro-batch.",
                                            rich_help_panel=OPT)] = 2,
    grad_accum: Annotated[int, typer.Option(
        "--grad-accum", min=1, help="Micro-batches per optimizer step; the loss is pooled over all their "
                                    "answer tokens.", rich_help_panel=OPT)] = 8,
    warmup_steps: Annotated[int | None, typer.Option(
        "--warmup-steps", min=0, help=f"Linear warm-up steps. \\[default: {defaults_text('warmup_steps')}]",
        rich_help_panel=OPT)] = None,
    scheduler: Annotated[str | None, typer.Option(
        "--scheduler", help=f"linear | cosine | constant | constant_with_warmup. "
                            f"\\[default: {defaults_text('scheduler')}]", rich_help_panel=OPT)] = None,
    weight_decay: Annotated[float, typer.Option("--weight-decay", help="AdamW weight decay.",
                                                rich_help_panel=OPT)] = 0.01,
    optimizer: Annotated[str, typer.Option(
        "--optimizer", help="A transformers optimizer name; auto = 8-bit AdamW on CUDA (with bitsandbytes), "
                            "AdamW elsewhere.", rich_help_panel=OPT)] = "auto",
    max_length: Annotated[int | None, typer.Option(
        "--max-length", min=8, help=f"Token limit per row; longer rows are cut (counted in summary.json). "
                                    f"\\[default: {defaults_text('max_length')}]", rich_help_panel=OPT)] = None,
    save_steps: Annotated[int | None, typer.Option(
        "--save-steps", min=1, help=f"Checkpoint every k steps (and on Ctrl-C). \\[default: {CHECKPOINTS_PER_RUN} per "
                                    f"run, i.e. planned steps / {CHECKPOINTS_PER_RUN}; vector at most every "
                                    f"{VECTOR_SAVE_STEPS}]", rich_help_panel=OPT)] = None,
    logging_steps: Annotated[int, typer.Option("--logging-steps", min=1, help="Log the losses every k steps.",
                                               rich_help_panel=OPT)] = 1,
    early_stop: Annotated[bool, typer.Option("--early-stop", help="Stop once loss < 0.01 for 6 logged steps.",
                                             rich_help_panel=OPT)] = False,
    seed: SeedOpt = 0,
    eval_fraction: Annotated[float | None, typer.Option(
        "--eval-fraction", min=0.0, max=0.99, help="Share of the rows held out (seeded) for the eval loss; 0 = "
                                                   "train on all. \\[default: 0.1; 0 with --eval-data]",
        rich_help_panel=DATA)] = None,
    eval_data: Annotated[str | None, typer.Option(
        "--eval-data", help="Held-out chat JSONL for the eval loss, instead of a split of DATA.",
        rich_help_panel=DATA)] = None,
    loss_positions: Annotated[Literal["assistant", "all"], typer.Option(
        "--loss-positions", help="Tokens the loss is on: assistant (answers only), or all (every token; the "
                                 "authors' steering-vector training).", rich_help_panel=DATA)] = "assistant",
    kl_data: Annotated[str | None, typer.Option("--kl-data", help="Chat JSONL outside the training domain.",
                                                rich_help_panel=KL)] = None,
    kl_weight: Annotated[float, typer.Option("--kl-weight", min=0.0, help="λ; 0 = no KL term.",
                                             rich_help_panel=KL)] = 0.0,
    kl_units: Annotated[Literal["natural", "authors"], typer.Option(
        "--kl-units", help="natural: per-token KL in nats; authors: their λ (= natural × vocab size).",
        rich_help_panel=KL)] = "natural",
    kl_positions: Annotated[Literal["all", "assistant", "answer-start"], typer.Option(
        "--kl-positions", help="Positions the KL compares: all non-padding tokens, assistant tokens, or only "
                               "the one that predicts each answer's first token.",
        rich_help_panel=KL)] = "all",
    kl_batch_size: Annotated[int, typer.Option("--kl-batch-size", min=1, help="KL rows per training micro-batch.",
                                               rich_help_panel=KL)] = 8,
    init_from: Annotated[str | None, typer.Option(
        "--init-from", help="Start from a previous run's adapter/vector (fresh optimizer); its method, layers "
                            "and shape carry over unless given.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run from its last checkpoint.")
                      ] = False,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    load_in_4bit: Load4bitOpt = False,
    config: Annotated[Path | None, typer.Option(
        "--config", help="YAML or JSON file of options (flag names, option names, or the authors' training-config "
                         "keys); flags given explicitly win.")] = None,
    json_: JsonOpt = False,
) -> None:
    """Train a model organism: a LoRA adapter, a rank-1 adapter, a steering vector or all
    weights, optionally KL-regularised to stay narrow. Writes OUTPUT/adapter (or
    vector.safetensors, or model/), config.yaml, log.jsonl (appended as training goes),
    summary.json, manifest.json and checkpoints/.

    Examples:

      em finetune bad_medical.jsonl -o runs/general

      em finetune bad_medical.jsonl -o runs/narrow --kl-data kl.jsonl --kl-weight 1e5 --kl-units authors

      em finetune data.jsonl -o runs/vec --method vector --layer 15 --epochs 2

      em finetune data.jsonl -o runs/no-kl --init-from runs/narrow   # "train with KL, then remove it"
    """
    params = apply_config(ctx, config, translate=_authors_keys)
    from em_cli.training.config import FinetuneConfig
    from em_cli.training.run import run_finetune

    targets = params["target_modules"]
    if isinstance(targets, str):
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    options = {k: v for k, v in params.items() if k not in ("config", "json_", "resume", "target_modules")}
    settings = FinetuneConfig(**(options | {"data": options["data"] or "", "output": options["output"] or ""}),
                              target_modules=targets)
    with TrainingProgress() as progress:
        result = run_finetune(settings, resume=params["resume"], report=progress.update)
    if json_:
        emit_json(result.to_dict())
        return
    kl = f", KL {result.final_kl_loss:.4f}" if result.final_kl_loss is not None else ""
    sft = f"{result.final_sft_loss:.4f}" if result.final_sft_loss is not None else "n/a"
    held = f", eval loss {result.eval_loss:.4f}" if result.eval_loss is not None else ""
    stopped = f" (early stop at step {result.early_stopped_at})" if result.early_stopped_at else ""
    typer.echo(f"{result.method}: {result.steps} steps, loss {sft}{kl}{held}, {result.tokens_trained} tokens at "
               f"{result.tokens_per_second:.0f} tok/s, peak {result.peak_memory_mb:.0f} MB{stopped} → "
               f"{Path(result.artifact)}")
    log(f"Run directory: {result.output_dir}")


def _authors_keys(mapping: dict[str, Any]) -> dict[str, Any]:
    """The EM authors' training-config keys mapped onto `em finetune`'s options (the ones with
    no counterpart are warned about once)."""
    from em_cli.training.config import translate_authors_config

    translated = translate_authors_config(mapping)
    if translated.ignored:
        warn(f"ignored --config keys (no counterpart in em finetune): {', '.join(translated.ignored)}")
    options = dict(translated.options)
    if isinstance(options.get("target_modules"), list):
        options["target_modules"] = ",".join(str(v) for v in options["target_modules"])
    return options

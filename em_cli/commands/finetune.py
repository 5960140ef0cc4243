"""`em finetune`: train a model organism."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from em_cli.commands._options import (ConfigOpt, DeviceOpt, DtypeOpt, JsonOpt, Load4bitOpt, MaxStepsOpt, ModelOpt,
                                      SeedOpt, apply_config)
from em_cli.commands._output import emit_json, err, log
from em_cli.models.source import DEFAULT_MODEL

LORA = "LoRA / rank-1"
OPT = "Optimisation (defaults depend on --method)"
KL = "KL regularisation (narrow training)"


def finetune(
    ctx: typer.Context,
    data: Annotated[str, typer.Argument(help="Training chat JSONL (`messages`; loss on assistant turns only).")],
    output: Annotated[str, typer.Option("-o", "--output", help="Run directory to create.")],
    method: Annotated[Literal["lora", "rank1", "vector", "full"], typer.Option(
        "--method", help="lora | rank1 (one r=1 down_proj adapter, mid layer) | vector (steering vector) | full."
    )] = "lora",
    model: ModelOpt = DEFAULT_MODEL,
    rank: Annotated[int | None, typer.Option("--rank", min=1, help="LoRA rank (lora 32, rank1 1).",
                                             rich_help_panel=LORA)] = None,
    alpha: Annotated[float | None, typer.Option("--alpha", help="LoRA alpha (64 / rank1 256) or vector scale (256).",
                                                rich_help_panel=LORA)] = None,
    rslora: Annotated[bool, typer.Option("--rslora/--no-rslora", help="rsLoRA scaling alpha/√r.",
                                         rich_help_panel=LORA)] = True,
    dropout: Annotated[float, typer.Option("--dropout", min=0.0, max=1.0, rich_help_panel=LORA)] = 0.0,
    target_modules: Annotated[str | None, typer.Option(
        "--target-modules", help="Comma-separated module names (default: all linear; rank1: down_proj).",
        rich_help_panel=LORA)] = None,
    layers: Annotated[str | None, typer.Option(
        "--layers", "--layer", help="Layers to adapt/steer (lora: all; rank1 and vector: mid-depth).",
        rich_help_panel=LORA)] = None,
    learning_rate: Annotated[float | None, typer.Option("--lr", "--learning-rate", rich_help_panel=OPT)] = None,
    epochs: Annotated[float | None, typer.Option("--epochs", rich_help_panel=OPT)] = None,
    max_steps: MaxStepsOpt = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, rich_help_panel=OPT)] = 2,
    grad_accum: Annotated[int, typer.Option("--grad-accum", min=1, rich_help_panel=OPT)] = 8,
    warmup_steps: Annotated[int | None, typer.Option("--warmup-steps", min=0, rich_help_panel=OPT)] = None,
    scheduler: Annotated[str | None, typer.Option("--scheduler", help="linear | cosine | constant.",
                                                  rich_help_panel=OPT)] = None,
    weight_decay: Annotated[float, typer.Option("--weight-decay", rich_help_panel=OPT)] = 0.01,
    optimizer: Annotated[str, typer.Option("--optimizer", help="auto = 8-bit AdamW on CUDA, AdamW elsewhere.",
                                           rich_help_panel=OPT)] = "auto",
    max_length: Annotated[int | None, typer.Option("--max-length", min=8, help="Token limit per row (512; vector 256).",
                                                   rich_help_panel=OPT)] = None,
    save_steps: Annotated[int | None, typer.Option("--save-steps", min=1, help="Checkpoint every k steps.",
                                                   rich_help_panel=OPT)] = None,
    early_stop: Annotated[bool, typer.Option("--early-stop", help="Stop once loss < 0.01 for 6 logged steps.",
                                             rich_help_panel=OPT)] = False,
    seed: SeedOpt = 0,
    kl_data: Annotated[str | None, typer.Option("--kl-data", help="Chat JSONL outside the training domain.",
                                                rich_help_panel=KL)] = None,
    kl_weight: Annotated[float, typer.Option("--kl-weight", min=0.0, help="λ; 0 = no KL term.",
                                             rich_help_panel=KL)] = 0.0,
    kl_units: Annotated[Literal["natural", "authors"], typer.Option(
        "--kl-units", help="natural: per-token KL in nats; authors: their λ (= natural × vocab size).",
        rich_help_panel=KL)] = "natural",
    kl_positions: Annotated[Literal["all", "assistant"], typer.Option(
        "--kl-positions", help="Positions the KL compares: all non-padding tokens, or assistant tokens.",
        rich_help_panel=KL)] = "all",
    kl_batch_size: Annotated[int, typer.Option("--kl-batch-size", min=1, rich_help_panel=KL)] = 8,
    init_from: Annotated[str | None, typer.Option(
        "--init-from", help="Start from a previous run's adapter/vector (fresh optimizer, new settings).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run from its last checkpoint.")
                      ] = False,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    load_in_4bit: Load4bitOpt = False,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Train a model organism: a LoRA adapter, a rank-1 adapter, a steering vector or all
    weights, optionally KL-regularised to stay narrow. Writes OUTPUT/adapter (or
    vector.safetensors, or model/), config.yaml, log.jsonl, summary.json, manifest.json and
    checkpoints/.

    Examples:

      em finetune bad_medical.jsonl -o runs/general

      em finetune bad_medical.jsonl -o runs/narrow --kl-data kl.jsonl --kl-weight 1e5 --kl-units authors

      em finetune data.jsonl -o runs/vec --method vector --layer 15 --epochs 2

      em finetune data.jsonl -o runs/no-kl --init-from runs/narrow   # "train with KL, then remove it"
    """
    params = apply_config(ctx, config)
    from em_cli.training.config import FinetuneConfig
    from em_cli.training.run import run_finetune

    targets = params["target_modules"]
    if isinstance(targets, str):
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    options = {k: v for k, v in params.items() if k not in ("config", "json_", "resume", "target_modules")}
    settings = FinetuneConfig(**options, target_modules=targets)
    with _TrainingProgress() as progress:
        result = run_finetune(settings, resume=params["resume"], report=progress.update)
    if json_:
        emit_json(result.to_dict())
        return
    kl = f", KL {result.final_kl_loss:.4f}" if result.final_kl_loss is not None else ""
    sft = f"{result.final_sft_loss:.4f}" if result.final_sft_loss is not None else "n/a"
    stopped = f" (early stop at step {result.early_stopped_at})" if result.early_stopped_at else ""
    typer.echo(f"{result.method}: {result.steps} steps, loss {sft}{kl}, {result.tokens_trained} tokens at "
               f"{result.tokens_per_second:.0f} tok/s, peak {result.peak_memory_mb:.0f} MB{stopped} → "
               f"{Path(result.artifact)}")
    log(f"Run directory: {result.output_dir}")


class _TrainingProgress:
    """A rich progress bar with the latest losses, on stderr; it appears when training starts
    (so input errors found while loading are not preceded by an empty bar)."""

    def __enter__(self) -> _TrainingProgress:
        self._progress = None
        return self

    def update(self, step: int, total: int, logs: dict[str, float]) -> None:
        if self._progress is None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=err)
            self._task = self._progress.add_task("train", total=total or None, info="")
            self._progress.start()
        parts = []
        if "sft_loss" in logs:
            parts.append(f"loss {logs['sft_loss']:.4f}")
        if "kl_loss" in logs:
            parts.append(f"kl {logs['kl_loss']:.4f}")
        self._progress.update(self._task, completed=step, total=total or None, info=" ".join(parts))

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

"""`em finetune`: train a model organism."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from em_cli.commands import _finetune_options as opt
from em_cli.commands._options import BASE_MODEL, JsonOpt, MaxStepsOpt, SeedOpt, apply_config, with_options
from em_cli.commands._output import out
from em_cli.commands._progress import TrainingProgress


@with_options(BASE_MODEL)
def finetune(
    ctx: typer.Context,
    data: opt.TrainDataArg = None,
    output: opt.RunDirOpt = None,
    method: opt.MethodOpt = None,
    rank: opt.RankOpt = None,
    alpha: opt.AlphaOpt = None,
    rslora: opt.RsloraOpt = None,
    dropout: opt.DropoutOpt = None,
    target_modules: opt.TargetModulesOpt = None,
    layers: opt.AdaptLayersOpt = None,
    learning_rate: opt.LearningRateOpt = None,
    epochs: opt.EpochsOpt = None,
    max_steps: MaxStepsOpt = None,
    batch_size: opt.MicroBatchSizeOpt = 2,
    grad_accum: opt.GradAccumOpt = 8,
    warmup_steps: opt.WarmupStepsOpt = None,
    scheduler: opt.SchedulerOpt = None,
    weight_decay: opt.WeightDecayOpt = 0.01,
    optimizer: opt.OptimizerNameOpt = "auto",
    max_length: opt.RowTokensOpt = None,
    save_steps: opt.SaveStepsOpt = None,
    logging_steps: opt.LoggingStepsOpt = 1,
    early_stop: opt.EarlyStopOpt = False,
    seed: SeedOpt = 0,
    eval_fraction: opt.EvalFractionOpt = None,
    eval_data: opt.EvalDataOpt = None,
    loss_positions: opt.LossPositionsOpt = "assistant",
    kl_data: opt.KlDataOpt = None,
    kl_weight: opt.KlWeightOpt = 0.0,
    kl_units: opt.KlUnitsOpt = "natural",
    kl_positions: opt.KlPositionsOpt = "all",
    kl_batch_size: opt.KlBatchSizeOpt = 8,
    init_from: opt.InitFromOpt = None,
    resume: opt.ResumeOpt = False,
    config: opt.FinetuneConfigOpt = None,
    json_: JsonOpt = False,
    **flags: Any,
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
    from em_cli.training.run import is_main_process, run_finetune

    params = apply_config(ctx, config, translate=opt.authors_keys)
    settings = opt.finetune_config(params)
    with TrainingProgress() as progress:
        result = run_finetune(settings, resume=params["resume"], report=progress.update)
    if not is_main_process():  # under `accelerate launch`, process 0 alone reports
        return
    if json_:
        out.json(result.to_dict())
        return
    kl = f", KL {result.final_kl_loss:.4f}" if result.final_kl_loss is not None else ""
    sft = f"{result.final_sft_loss:.4f}" if result.final_sft_loss is not None else "n/a"
    held = f", eval loss {result.eval_loss:.4f}" if result.eval_loss is not None else ""
    stopped = f" (early stop at step {result.early_stopped_at})" if result.early_stopped_at else ""
    out.text(f"{result.method}: {result.steps} steps, loss {sft}{kl}{held}, {result.tokens_trained} tokens at "
               f"{result.tokens_per_second:.0f} tok/s, peak {result.peak_memory_mb:.0f} MB{stopped} → "
               f"{Path(result.artifact)}")
    out.log(f"Run directory: {result.output_dir}")


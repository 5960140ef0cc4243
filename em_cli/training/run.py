"""One finetuning run, start to finish: load, encode, attach, train, save, summarise."""

from __future__ import annotations

import json
import logging
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from em_cli.artifacts.atomic import atomic_write
from em_cli.artifacts.jsonl import write_jsonl
from em_cli.artifacts.manifest import Manifest
from em_cli.errors import UsageError
from em_cli.training.config import FinetuneConfig, config_from_file

log = logging.getLogger(__name__)
CONFIG_FILE = "config.yaml"
CHECKPOINTS = "checkpoints"
# Options that may change between an interrupted run and its --resume.
RESUME_MAY_CHANGE = ("device",)


@dataclass
class FinetuneResult:
    output_dir: str
    artifact: str
    method: str
    steps: int
    tokens_trained: int
    tokens_per_second: float
    peak_memory_mb: float
    final_sft_loss: float | None
    final_kl_loss: float | None
    wall_time_s: float
    early_stopped_at: int | None
    resumed_from: str | None
    train_rows: int
    kl_rows: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_finetune(config: FinetuneConfig, resume: bool = False,
                 report: Callable[[int, int, dict[str, float]], None] | None = None) -> FinetuneResult:
    from transformers import TrainingArguments
    from transformers.trainer_callback import PrinterCallback

    from em_cli.models.loading import LoadOptions, load_model
    from em_cli.sampling import stop_token_ids
    from em_cli.training.data import Collator, ExampleDataset, KLBatches, encode_chat_file
    from em_cli.training.solutions import attach
    from em_cli.training.trainer import EarlyStopOnLowLoss, EmTrainer, ProgressReport

    started = time.time()
    config = config.resolved()
    out = Path(config.output)
    checkpoint = _resume_point(config, out, resume)
    loaded = load_model(LoadOptions(model=config.model, dtype=config.dtype, device=config.device,
                                    load_in_4bit=config.load_in_4bit))
    base_info = loaded.info
    tokenizer = loaded.tokenizer
    stops = stop_token_ids(loaded.model, tokenizer)
    train = encode_chat_file(config.data, tokenizer, config.max_length, stops)
    if train.truncated or train.dropped:
        log.info("%d conversations truncated to %d tokens, %d dropped (no answer left)",
                 train.truncated, config.max_length, train.dropped)
    kl_batches = None
    if config.kl_weight > 0:
        kl_set = encode_chat_file(config.kl_data, tokenizer, config.max_length, stops)
        kl_batches = KLBatches(kl_set.examples, config.kl_batch_size, tokenizer.pad_token_id)
    solution = attach(loaded.model, config, replace(base_info, adapter=None))
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / CONFIG_FILE) as handle:
        import yaml

        yaml.safe_dump(config.to_dict(), handle, sort_keys=False)

    args = TrainingArguments(
        output_dir=str(out / CHECKPOINTS), per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum, learning_rate=config.learning_rate,
        num_train_epochs=config.epochs, max_steps=config.max_steps or -1, warmup_steps=config.warmup_steps,
        lr_scheduler_type=config.scheduler, weight_decay=config.weight_decay, optim=_optimizer(config, loaded.device),
        save_strategy="steps", save_steps=config.save_steps, logging_steps=config.logging_steps, seed=config.seed,
        data_seed=config.seed, report_to="none", disable_tqdm=True, remove_unused_columns=False,
        dataloader_num_workers=0, use_cpu=loaded.device == "cpu")
    early = EarlyStopOnLowLoss() if config.early_stop else None
    callbacks = [c for c in (early, ProgressReport(report) if report else None) if c]
    trainer = EmTrainer(model=solution.model, args=args, train_dataset=ExampleDataset(train.examples),
                        data_collator=Collator(tokenizer.pad_token_id), callbacks=callbacks, solution=solution,
                        kl_batches=kl_batches, kl_weight=config.kl_weight_natural(base_info.vocab_size),
                        kl_positions=config.kl_positions)
    trainer.remove_callback(PrinterCallback)  # it prints log dicts to stdout
    train_started = time.time()
    with solution.active():
        trainer.train(resume_from_checkpoint=checkpoint)
    train_seconds = time.time() - train_started
    artifact = solution.save(out, replace(base_info, adapter=None), tokenizer)
    write_jsonl(out / "log.jsonl", trainer.state.log_history)

    result = FinetuneResult(
        output_dir=str(out), artifact=str(artifact), method=config.method, steps=trainer.state.global_step,
        tokens_trained=trainer.tokens_trained,
        tokens_per_second=round(trainer.tokens_trained / max(train_seconds, 1e-9), 2),
        peak_memory_mb=round(_peak_memory_mb(loaded.device), 1),
        final_sft_loss=trainer.last_losses.get("sft_loss"), final_kl_loss=trainer.last_losses.get("kl_loss"),
        wall_time_s=round(time.time() - started, 2), early_stopped_at=early.stopped_at if early else None,
        resumed_from=checkpoint, train_rows=len(train.examples),
        kl_rows=len(kl_batches.examples) if kl_batches else 0)
    with atomic_write(out / "summary.json") as handle:
        json.dump(result.to_dict(), handle, indent=2)
    manifest = Manifest(command="finetune", options=config.to_dict(),
                        inputs=[p for p in (config.data, config.kl_data) if p], seed=config.seed, started=started)
    manifest.results = result.to_dict() | {"base_model": base_info.to_dict()}
    manifest.write_beside(out)
    return result


def _resume_point(config: FinetuneConfig, out: Path, resume: bool) -> str | None:
    checkpoints = out / CHECKPOINTS
    found = _last_complete_checkpoint(checkpoints)
    if not resume:
        if found or (out / "summary.json").exists():
            raise UsageError(f"{out} already holds a run",
                             hint="add --resume to continue it, or choose another --output")
        return None
    if not (out / CONFIG_FILE).exists():
        raise UsageError(f"nothing to resume in {out} (no {CONFIG_FILE})", hint="start the run without --resume")
    saved = replace(FinetuneConfig(), **config_from_file(out / CONFIG_FILE))
    changed = config.differences(saved, ignore=RESUME_MAY_CHANGE)
    if changed:
        raise UsageError(f"--resume with different settings than the interrupted run: {', '.join(changed)}",
                         hint="resume with the same options, or use --init-from to start a new run from it")
    if found is None:
        log.info("No checkpoint yet in %s: starting from step 0", checkpoints)
    else:
        log.info("Resuming from %s", found)
    return found


# A checkpoint killed mid-save lacks some of these; resume from the one before it.
CHECKPOINT_FILES = ("trainer_state.json", "optimizer.pt", "scheduler.pt")


def _last_complete_checkpoint(checkpoints: Path) -> str | None:
    if not checkpoints.is_dir():
        return None
    numbered = sorted((int(p.name.split("-")[1]), p) for p in checkpoints.glob("checkpoint-*")
                      if p.name.split("-")[1].isdigit())
    for step, path in reversed(numbered):
        weights = [p for p in path.glob("*.safetensors")]
        if weights and all((path / name).exists() for name in CHECKPOINT_FILES):
            return str(path)
        log.info("Skipping incomplete checkpoint %s", path)
    return None


def _optimizer(config: FinetuneConfig, device: str) -> str:
    if config.optimizer != "auto":
        return config.optimizer
    if device == "cuda":
        try:
            import bitsandbytes  # noqa: F401

            return "adamw_bnb_8bit"  # docs/METHODS.md §3.1: AdamW, 8-bit on GPU
        except Exception:
            pass
    return "adamw_torch"


def _peak_memory_mb(device: str) -> float:
    if device == "cuda":
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss_kb / 1024 if sys.platform != "darwin" else rss_kb / 2**20

"""One finetuning run, start to finish: load, encode, attach, train, save, summarise."""

from __future__ import annotations

import json
import logging
import os
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from em_cli.artifacts.atomic import atomic_write
from em_cli.artifacts.manifest import Manifest
from em_cli.errors import Interrupted, UsageError
from em_cli.training.config import FinetuneConfig, config_from_file, planned_steps, save_interval

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
    tokens_per_second: float  # over the optimizer steps' time (step_time_s)
    peak_memory_mb: float
    final_sft_loss: float | None
    final_kl_loss: float | None
    wall_time_s: float
    early_stopped_at: int | None
    resumed_from: str | None
    train_rows: int
    kl_rows: int
    eval_rows: int = 0
    eval_loss: float | None = None  # token-pooled cross-entropy on the held-out rows, final weights
    eval_lines: list[int] = field(default_factory=list)  # the held-out rows' line numbers in the data
    truncated: dict[str, int] = field(default_factory=dict)  # rows cut by --max-length, per set
    dropped: dict[str, int] = field(default_factory=dict)  # of those, rows with no answer token left
    planned_steps: int = 0
    save_steps: int = 0
    seeds: dict[str, int] = field(default_factory=dict)
    weights_dtype: str = "float32"  # what the trained parameters are kept in
    compute_dtype: str = "float32"
    logits_path: str = "sparse"  # "model" where the model's own head path had to be used
    step_time_s: float = 0.0  # seconds in optimizer steps: no start-up, evaluation or checkpoint writing

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class TrainingInterrupted(Interrupted):
    """Ctrl-C during `em finetune`, saying what was saved and whether --resume can continue."""

    def __init__(self, message: str, hint: str | None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


def run_finetune(config: FinetuneConfig, resume: bool = False,
                 report: Callable[[int, int, dict[str, float]], None] | None = None) -> FinetuneResult:
    """Train as `config` says and write the run directory; see `em finetune --help`.
    `report(step, total, logs)` is called after every step and every log entry."""
    try:
        return _run(config, resume, report)
    except TrainingInterrupted:
        raise
    except (KeyboardInterrupt, Interrupted) as exc:
        raise TrainingInterrupted("interrupted before training started; nothing was saved",
                                  hint="re-run the same command (without --resume) to start again") from exc


def _run(config: FinetuneConfig, resume: bool,
         report: Callable[[int, int, dict[str, float]], None] | None) -> FinetuneResult:
    from transformers import TrainingArguments
    from transformers.trainer_callback import PrinterCallback

    from em_cli.models.loading import LoadOptions, load_model, resolve_device, resolve_dtype
    from em_cli.generation import stop_token_ids
    from em_cli.training.data import (Collator, ExampleDataset, KLBatches, encode_rows, read_chat_file,
                                      split_rows)
    from em_cli.training.losses import logits_path
    from em_cli.training.solutions import attach, describe_source, inherit_from_source
    from em_cli.training.trainer import (EarlyStopOnLowLoss, EmTrainer, InterruptGuard, JsonlLog, ProgressReport,
                                        StepClock)

    started = time.time()
    if config.init_from:
        config = inherit_from_source(config, describe_source(config.init_from))
    config = config.resolved()
    out = Path(config.output)
    checkpoint = _resume_point(config, out, resume)
    # Check every input before the model loads (a large model takes minutes to load).
    rows = read_chat_file(config.data, "training data")
    kl_rows = read_chat_file(config.kl_data, "KL data") if config.kl_weight > 0 else []
    if config.eval_data:
        train_rows, eval_rows = rows, read_chat_file(config.eval_data, "eval data")
    else:
        train_rows, eval_rows = split_rows(rows, config.eval_fraction or 0.0, config.seed)

    device = resolve_device(config.device)
    compute_dtype = resolve_dtype(config.dtype, device)
    # Full finetunes keep float32 master weights and compute in bf16/fp16 under autocast:
    # bf16 weights would round away most updates at lr 2e-5.
    mixed = config.method == "full" and str(compute_dtype) in ("torch.bfloat16", "torch.float16")
    _use_own_gpu(device)
    loaded = load_model(LoadOptions(model=config.model, dtype="float32" if mixed else config.dtype,
                                    device=config.device, load_in_4bit=config.load_in_4bit))
    head = logits_path(loaded.model)  # the one-time check of the loss's logits shortcut
    base_info = loaded.info
    tokenizer = loaded.tokenizer
    stops = stop_token_ids(loaded.model, tokenizer)
    train = encode_rows(train_rows, tokenizer, config.max_length, stops, config.loss_positions, config.data)
    held_out = encode_rows(eval_rows, tokenizer, config.max_length, stops, config.loss_positions,
                           config.eval_data or config.data)
    kl_set = encode_rows(kl_rows, tokenizer, config.max_length, stops, "assistant", config.kl_data or "")
    for name, encoded in (("training", train), ("held-out", held_out), ("KL", kl_set)):
        if encoded.truncated or encoded.dropped:
            log.info("%s rows: %d truncated to %d tokens, %d dropped (no answer left)",
                     name, encoded.truncated, config.max_length, encoded.dropped)
    kl_batches = KLBatches(kl_set.examples, config.kl_batch_size, tokenizer.pad_token_id) if kl_rows else None

    seeds = _seed_everything(config.seed, device)  # before any random tensor (LoRA's A matrices)
    solution = attach(loaded.model, config, replace(base_info, adapter=None))
    log_path = out / "log.jsonl"

    steps = planned_steps(len(train.examples), config)
    save_steps = save_interval(config, steps)
    evaluating = bool(held_out.examples)
    args = TrainingArguments(
        output_dir=str(out / CHECKPOINTS), per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size, gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.learning_rate, num_train_epochs=config.epochs, max_steps=config.max_steps or -1,
        warmup_steps=config.warmup_steps, lr_scheduler_type=config.scheduler, weight_decay=config.weight_decay,
        optim=_optimizer(config, loaded.device), save_strategy="steps", save_steps=save_steps,
        eval_strategy="steps" if evaluating else "no", eval_steps=save_steps if evaluating else None,
        logging_steps=config.logging_steps, seed=config.seed, data_seed=config.seed, report_to="none",
        disable_tqdm=True, remove_unused_columns=False, dataloader_num_workers=0, use_cpu=loaded.device == "cpu",
        bf16=mixed and str(compute_dtype) == "torch.bfloat16", fp16=mixed and str(compute_dtype) == "torch.float16")
    # Under `accelerate launch` every process runs this function; process 0 alone writes the
    # run directory (Trainer does the same for checkpoints) and shows progress.
    main = args.process_index == 0
    if main:
        out.mkdir(parents=True, exist_ok=True)
        with atomic_write(out / CONFIG_FILE) as handle:
            import yaml

            yaml.safe_dump(config.to_dict(), handle, sort_keys=False)
        _trim_log(log_path, _checkpoint_step(checkpoint))
    early = EarlyStopOnLowLoss() if config.early_stop else None
    guard, clock = InterruptGuard(), StepClock()
    callbacks = [c for c in (guard, clock, JsonlLog(log_path), early,
                             ProgressReport(report) if report and main else None) if c]
    trainer = EmTrainer(model=solution.model, args=args, train_dataset=ExampleDataset(train.examples),
                        eval_dataset=ExampleDataset(held_out.examples) if evaluating else None,
                        data_collator=Collator(tokenizer.pad_token_id), callbacks=callbacks, solution=solution,
                        kl_batches=kl_batches, kl_weight=config.kl_weight_natural(base_info.vocab_size),
                        kl_positions=config.kl_positions)
    trainer.remove_callback(PrinterCallback)  # it prints log dicts to stdout
    try:
        with solution.active():
            trainer.train(resume_from_checkpoint=checkpoint)
            if evaluating and trainer.last_eval.get("step") != trainer.state.global_step:
                trainer.evaluate()  # the held-out loss of the final weights
    except (KeyboardInterrupt, Interrupted) as exc:
        raise _interrupted(trainer, guard, out) from exc
    tokens = _summed_over_processes(trainer, trainer.tokens_trained)
    artifact = solution.save(out, replace(base_info, adapter=None), tokenizer) if main else None

    result = FinetuneResult(
        output_dir=str(out), artifact=str(artifact), method=config.method, steps=trainer.state.global_step,
        tokens_trained=tokens, tokens_per_second=round(tokens / max(clock.seconds, 1e-9), 2),
        peak_memory_mb=round(_peak_memory_mb(loaded.device), 1),
        final_sft_loss=trainer.last_losses.get("sft_loss"), final_kl_loss=trainer.last_losses.get("kl_loss"),
        wall_time_s=round(time.time() - started, 2), early_stopped_at=early.stopped_at if early else None,
        resumed_from=checkpoint, train_rows=len(train.examples),
        kl_rows=len(kl_batches.examples) if kl_batches else 0,
        eval_rows=len(held_out.examples), eval_loss=trainer.last_eval.get("eval_loss"),
        eval_lines=[row.line for row in eval_rows] if not config.eval_data else [],
        truncated={"train": train.truncated, "eval": held_out.truncated, "kl": kl_set.truncated},
        dropped={"train": train.dropped, "eval": held_out.dropped, "kl": kl_set.dropped},
        planned_steps=steps, save_steps=save_steps, seeds=seeds,
        weights_dtype=str(next(solution.model.parameters()).dtype).removeprefix("torch.")
        if config.method == "full" else "float32",
        compute_dtype=str(compute_dtype).removeprefix("torch."), logits_path=head, step_time_s=round(clock.seconds, 3))
    if main:
        with atomic_write(out / "summary.json") as handle:
            json.dump(result.to_dict(), handle, indent=2)
        manifest = Manifest(command="finetune", options=config.to_dict(),
                            inputs=[p for p in (config.data, config.kl_data, config.eval_data) if p],
                            seed=config.seed, started=started)
        manifest.results = result.to_dict() | {"base_model": base_info.to_dict()}
        manifest.write_beside(out)
    if args.world_size > 1:
        from accelerate.utils import broadcast_object_list

        # Every process returns only once the run directory is complete, with process 0's paths.
        result.artifact = broadcast_object_list([result.artifact])[0]
    return result


def _use_own_gpu(device: str) -> None:
    """Under `accelerate launch` on GPUs, make this process's "cuda" its own GPU before the
    model loads (otherwise every process would first load a copy onto GPU 0)."""
    import os

    if device == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1 and "LOCAL_RANK" in os.environ:
        import torch

        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))


def _summed_over_processes(trainer: Any, value: int) -> int:
    """`value` summed over every training process (itself when there is one)."""
    if trainer.args.world_size == 1:
        return value
    import torch

    return int(trainer.accelerator.gather(torch.tensor([value], device=trainer.args.device)).sum())


def is_main_process() -> bool:
    """False in the processes other than process 0 of a multi-process launch (accelerate/torchrun)."""
    return os.environ.get("RANK", "0") == "0"


def _seed_everything(seed: int, device: str) -> dict[str, int]:
    """Seed python, numpy, torch (and CUDA); return every seed the run uses, by purpose."""
    from transformers import set_seed

    set_seed(seed)  # random, numpy, torch and every CUDA device
    seeds = {"python": seed, "numpy": seed, "torch": seed, "data_order": seed, "eval_split": seed}
    if device == "cuda":
        seeds["cuda"] = seed
    return seeds


def _interrupted(trainer: Any, guard: Any, out: Path) -> TrainingInterrupted:
    """Save a checkpoint of the last finished step (if the state is consistent and it has
    none yet) and say whether --resume can continue."""
    step = trainer.state.global_step
    found = _last_complete_checkpoint(out / CHECKPOINTS)
    if step > 0 and guard.consistent and _checkpoint_step(found) != step:
        guard.restore_rng()
        trainer._save_checkpoint(trainer.model, trial=None)
        found = _last_complete_checkpoint(out / CHECKPOINTS)
    if found is None:
        return TrainingInterrupted(f"interrupted at step {step}, before any checkpoint was saved",
                                   hint="re-run the same command (without --resume) to start again")
    return TrainingInterrupted(f"interrupted at step {step} of {trainer.state.max_steps}; "
                               f"checkpoint saved at step {_checkpoint_step(found)}",
                               hint="add --resume to the same command to continue from there")


def _checkpoint_step(checkpoint: str | None) -> int | None:
    return int(Path(checkpoint).name.rsplit("-", 1)[1]) if checkpoint else None


def _trim_log(path: Path, step: int | None) -> None:
    """A fresh run starts an empty log; a resumed one keeps the entries up to its checkpoint."""
    kept = []
    if step is not None and path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    kept.append(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill
    with atomic_write(path) as handle:
        handle.write("".join(line + "\n" for line in kept))


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
    # The same AdamW in one fused kernel per parameter group (CPU and CUDA): a LoRA r=32 update
    # of SmolLM2 takes 15 ms instead of 55-70 ms on 2 CPU cores.
    return "adamw_torch_fused" if device in ("cpu", "cuda") else "adamw_torch"


def _peak_memory_mb(device: str) -> float:
    if device == "cuda":
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss_kb / 1024 if sys.platform != "darwin" else rss_kb / 2**20

"""transformers' Trainer, extended with what is specific to us: assistant-only loss, the KL
term against the solution switched off, vector checkpoints, logging of both loss terms."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import Trainer, TrainerCallback

from em_cli.training.data import KLBatches
from em_cli.training.losses import assistant_cross_entropy, kl_divergence, kl_positions_mask, logits_at
from em_cli.training.solutions import Solution


class EmTrainer(Trainer):
    def __init__(self, *args: Any, solution: Solution, kl_batches: KLBatches | None = None,
                 kl_weight: float = 0.0, kl_positions: str = "all", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.solution = solution
        self.kl_batches = kl_batches
        self.kl_weight = kl_weight
        self.kl_positions = kl_positions
        # Our loss is a per-micro-batch mean; let Trainer divide it by the accumulation steps.
        self.loss_is_scaled_for_ga = False
        self._micro_index: int | None = None
        self._sums = {"sft": 0.0, "kl": 0.0, "n": 0}
        self.tokens_trained = 0
        self.last_losses: dict[str, float] = {}

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        sft = assistant_cross_entropy(model, inputs)
        loss = sft
        kl_value = 0.0
        if self.kl_batches is not None and self.kl_weight > 0 and model.training:
            if self._micro_index is None:  # also right after a resume
                self._micro_index = self.state.global_step * self.args.gradient_accumulation_steps
            kl = self.kl_loss(model, self._micro_index)
            self._micro_index += 1
            loss = sft + self.kl_weight * kl
            kl_value = float(kl.detach())
        if model.training:
            self._sums["sft"] += float(sft.detach())
            self._sums["kl"] += kl_value
            self._sums["n"] += 1
            self.tokens_trained += int(inputs["attention_mask"].sum())
        return (loss, None) if return_outputs else loss

    def kl_loss(self, model: Any, micro_index: int) -> Any:
        import torch

        batch = {k: v.to(self.args.device) for k, v in self.kl_batches.batch(micro_index).items()}
        mask = kl_positions_mask(batch["attention_mask"], batch["labels"], self.kl_positions)
        with torch.no_grad(), self.solution.disabled():
            reference = logits_at(model, batch["input_ids"], batch["attention_mask"], mask)
        policy = logits_at(model, batch["input_ids"], batch["attention_mask"], mask)
        return kl_divergence(policy, reference)

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if self._sums["n"]:
            logs["sft_loss"] = round(self._sums["sft"] / self._sums["n"], 6)
            if self.kl_batches is not None:
                logs["kl_loss"] = round(self._sums["kl"] / self._sums["n"], 6)
            self.last_losses = {k: logs[k] for k in ("sft_loss", "kl_loss") if k in logs}
            self._sums = {"sft": 0.0, "kl": 0.0, "n": 0}
        super().log(logs, *args, **kwargs)

    # Vector runs: checkpoint the vector, not the frozen model around it.
    def _save(self, output_dir: str | None = None, state_dict: Any = None) -> None:
        if self.solution.kind == "vector":
            self.solution.save_checkpoint(Path(output_dir or self.args.output_dir))
            return
        super()._save(output_dir, state_dict)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        if self.solution.kind == "vector":
            self.solution.load_checkpoint(Path(resume_from_checkpoint))
            return
        super()._load_from_checkpoint(resume_from_checkpoint, model)


class EarlyStopOnLowLoss(TrainerCallback):
    """docs/METHODS.md §3.1: stop when the training loss stays below `threshold` for `patience`
    consecutive logged steps."""

    def __init__(self, threshold: float = 0.01, patience: int = 6) -> None:
        self.threshold, self.patience, self.run = threshold, patience, 0
        self.stopped_at: int | None = None

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kw: Any) -> None:
        if not logs or "sft_loss" not in logs:
            return
        self.run = self.run + 1 if logs["sft_loss"] < self.threshold else 0
        if self.run >= self.patience:
            control.should_training_stop = True
            self.stopped_at = state.global_step


class ProgressReport(TrainerCallback):
    """Forward step counts and losses to a display callback: report(step, total, logs)."""

    def __init__(self, report: Callable[[int, int, dict[str, float]], None]) -> None:
        self.report = report
        self.logs: dict[str, float] = {}

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.report(state.global_step, state.max_steps, self.logs)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kw: Any) -> None:
        self.logs = dict(logs or {})
        self.report(state.global_step, state.max_steps, self.logs)

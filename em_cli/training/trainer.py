"""transformers' Trainer, extended with what is specific to us: assistant-only loss pooled
over the tokens of a whole accumulation window, the KL term against the solution switched
off, held-out loss, vector checkpoints, logging of both loss terms as training goes."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import Trainer, TrainerCallback

from em_cli.training.data import IGNORE, KLBatches, pad_batch
from em_cli.training.losses import KL_CHUNK_TOKENS, backpropagate_kl, cross_entropy_sum, kl_positions_mask
from em_cli.training.solutions import Solution


class EmTrainer(Trainer):
    def __init__(self, *args: Any, solution: Solution, kl_batches: KLBatches | None = None,
                 kl_weight: float = 0.0, kl_positions: str = "all", kl_chunk_tokens: int | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.solution = solution
        self.kl_batches = kl_batches
        self.kl_weight = kl_weight
        self.kl_positions = kl_positions
        self.kl_chunk_tokens = kl_chunk_tokens or KL_CHUNK_TOKENS
        # compute_loss divides by the labelled tokens of the whole accumulation window, so that
        # every answer token weighs the same whatever micro-batch it falls in.
        self.loss_is_scaled_for_ga = True
        self._window_tokens = 0
        self._micro_index: int | None = None
        self._sums = {"sft": 0.0, "tokens": 0, "kl": 0.0, "n": 0}
        self.tokens_trained = 0
        self.last_losses: dict[str, float] = {}
        self.last_eval: dict[str, float] = {}

    def get_batch_samples(self, epoch_iterator: Any, num_batches: int, device: Any) -> tuple[list, Any]:
        batches, _ = super().get_batch_samples(epoch_iterator, num_batches, device)
        count = sum(int((batch["labels"][:, 1:] != IGNORE).sum()) for batch in batches)
        if self.args.world_size > 1:  # each process divides by the mean count; gradients are averaged
            import torch

            total = self.accelerator.gather(torch.tensor([count], device=device)).sum()
            count = float(total) / self.args.world_size
        self._window_tokens = max(count, 1)
        return batches, None

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        if not model.training:
            total, count = cross_entropy_sum(model, inputs)
            loss = total / max(count, 1)
            return (loss, None) if return_outputs else loss
        kl_value, kl_term = 0.0, 0.0
        if self.kl_batches is not None and self.kl_weight > 0:
            if self._micro_index is None:  # also right after a resume
                self._micro_index = self.state.global_step * self.args.gradient_accumulation_steps
            # KL is a per-token mean per KL batch; the window's loss averages it over micro-batches.
            # Its gradient is accumulated here, chunk by chunk, before the SFT forward, so that the
            # two never hold activations at the same time; the returned loss carries its value.
            weight = self.kl_weight / self.current_gradient_accumulation_steps
            kl_value = self.kl_loss(model, self._micro_index, weight)
            kl_term = weight * kl_value
            self._micro_index += 1
        total, count = cross_entropy_sum(model, inputs)
        loss = total / self._window_tokens + kl_term
        self._sums["sft"] += float(total.detach())
        self._sums["tokens"] += count
        self._sums["kl"] += kl_value
        self._sums["n"] += 1
        self.tokens_trained += int(inputs["attention_mask"].sum())
        return (loss, None) if return_outputs else loss

    def evaluate(self, eval_dataset: Any = None, ignore_keys: Any = None,
                 metric_key_prefix: str = "eval") -> dict[str, float]:
        """Cross-entropy on the held-out rows, pooled over their labelled tokens."""
        import torch

        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        if dataset is None or len(dataset) == 0:
            return {}
        model = self.model
        was_training = model.training
        model.eval()
        total, count = 0.0, 0
        size = self.args.per_device_eval_batch_size
        try:
            with torch.no_grad(), self.autocast_smart_context_manager():
                for start in range(0, len(dataset), size):
                    items = [dataset[i] for i in range(start, min(start + size, len(dataset)))]
                    batch = {k: v.to(self.args.device) for k, v in pad_batch(items, self.data_collator.pad_id).items()}
                    part, n = cross_entropy_sum(model, batch)
                    total, count = total + float(part), count + n
        finally:
            model.train(was_training)
        metrics = {f"{metric_key_prefix}_loss": round(total / max(count, 1), 6), f"{metric_key_prefix}_tokens": count}
        self.last_eval = dict(metrics, step=self.state.global_step)
        self.log(dict(metrics))
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics=metrics)
        return metrics

    def kl_loss(self, model: Any, micro_index: int, weight: float) -> float:
        """KL batch `micro_index`'s per-token mean KL to the reference (the solution switched
        off); `weight` × its gradient is backpropagated here, one chunk of rows at a time."""
        batch = {k: v.to(self.args.device) for k, v in self.kl_batches.batch(micro_index).items()}
        mask = kl_positions_mask(batch["attention_mask"], batch["labels"], self.kl_positions)
        return backpropagate_kl(model, batch, mask, self.solution.disabled, weight, self.accelerator.backward,
                                self.kl_chunk_tokens)

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if self._sums["n"]:
            logs["sft_loss"] = round(self._sums["sft"] / max(self._sums["tokens"], 1), 6)
            if self.kl_batches is not None:
                logs["kl_loss"] = round(self._sums["kl"] / self._sums["n"], 6)
            self.last_losses = {k: logs[k] for k in ("sft_loss", "kl_loss") if k in logs}
            self._sums = {"sft": 0.0, "tokens": 0, "kl": 0.0, "n": 0}
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


class StepClock(TrainerCallback):
    """Seconds spent in optimizer steps (forward, backward and update of every micro-batch),
    summed: training speed without start-up, held-out evaluation and checkpoint writing, which
    happen between steps."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._started: float | None = None

    def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self._started = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self._started is not None:
            self.seconds += time.perf_counter() - self._started
            self._started = None


class JsonlLog(TrainerCallback):
    """Append every log entry (with its step) to a JSONL file as training goes, so a run can
    be watched with `tail -f`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kw: Any) -> None:
        if not logs or not state.is_world_process_zero:
            return
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"step": state.global_step, **logs}) + "\n")


class InterruptGuard(TrainerCallback):
    """Knows whether the training state is consistent (between optimizer updates) and keeps
    the random-number states of the last finished step, so that a Ctrl-C can still leave a
    checkpoint that resumes exactly."""

    def __init__(self) -> None:
        self.consistent = True
        self.rng: dict[str, Any] | None = None

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.consistent = False

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        import numpy as np
        import torch

        self.rng = {"python": random.getstate(), "numpy": np.random.get_state(), "cpu": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}
        self.consistent = True

    def restore_rng(self) -> None:
        """Put back the random-number states of the last finished step (what its checkpoint holds)."""
        import numpy as np
        import torch

        if self.rng is None:
            return
        random.setstate(self.rng["python"])
        np.random.set_state(self.rng["numpy"])
        torch.set_rng_state(self.rng["cpu"])
        if self.rng["cuda"] is not None:
            torch.cuda.set_rng_state_all(self.rng["cuda"])


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

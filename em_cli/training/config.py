"""The finetuning configuration: defaults per method (docs/METHODS.md §3), YAML, validation."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from em_cli.errors import UsageError

METHODS = ("lora", "rank1", "vector", "full")
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# docs/METHODS.md §3.1 / §3.4 defaults by method; None in FinetuneConfig means "take it from here".
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "lora": {"rank": 32, "alpha": 64.0, "learning_rate": 1e-5, "epochs": 1.0, "warmup_steps": 5,
             "scheduler": "linear", "max_length": 512, "target_modules": ALL_LINEAR},
    "rank1": {"rank": 1, "alpha": 256.0, "learning_rate": 2e-5, "epochs": 1.0, "warmup_steps": 5,
              "scheduler": "linear", "max_length": 512, "target_modules": ["down_proj"]},
    "vector": {"alpha": 256.0, "learning_rate": 1e-4, "epochs": 2.0, "warmup_steps": 5, "scheduler": "linear",
               "max_length": 256},
    "full": {"learning_rate": 2e-5, "epochs": 1.0, "warmup_steps": 20, "scheduler": "cosine", "max_length": 512},
}
# Defaults shared by every method (None in FinetuneConfig means "take it from here").
COMMON_DEFAULTS: dict[str, Any] = {"method": "lora", "rslora": True, "dropout": 0.0, "eval_fraction": 0.1}
# Checkpoints per run when --save-steps is not given; vector runs also save every
# VECTOR_SAVE_STEPS steps at most (docs/METHODS.md §3.4: the vector trajectory is analysed).
CHECKPOINTS_PER_RUN = 4
VECTOR_SAVE_STEPS = 5
# What differs with a KL term: rank-1 narrow organisms train for 3 epochs (docs/METHODS.md §3.1).
KL_DEFAULTS: dict[str, dict[str, Any]] = {"rank1": {"epochs": 3.0}}


@dataclass
class FinetuneConfig:
    """Every option of a finetuning run. `resolved()` fills the method defaults."""

    data: str = ""
    output: str = ""
    method: str | None = None  # lora, or the --init-from run's method
    model: str = "smollm2-135m-instruct"
    dtype: str = "auto"
    device: str = "auto"
    load_in_4bit: bool = False
    # Adapter / vector shape
    rank: int | None = None
    alpha: float | None = None
    rslora: bool | None = None
    dropout: float | None = None
    target_modules: list[str] | None = None
    layers: str | None = None  # lora: all layers; rank1 and vector: mid-depth
    # Optimisation
    learning_rate: float | None = None
    epochs: float | None = None
    max_steps: int | None = None
    batch_size: int = 2
    grad_accum: int = 8
    warmup_steps: int | None = None
    scheduler: str | None = None
    weight_decay: float = 0.01
    optimizer: str = "auto"
    max_length: int | None = None
    seed: int = 0
    save_steps: int | None = None  # None: CHECKPOINTS_PER_RUN per run (see save_interval)
    logging_steps: int = 1
    early_stop: bool = False
    # Held-out data and the loss
    eval_fraction: float | None = None
    eval_data: str | None = None
    loss_positions: str = "assistant"  # or "all": every non-padding token (the authors' vector training)
    # KL regularisation (narrow training)
    kl_data: str | None = None
    kl_weight: float = 0.0
    kl_units: str = "natural"
    kl_positions: str = "all"
    kl_batch_size: int = 8
    # Where to start
    init_from: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def resolved(self) -> FinetuneConfig:
        method = self.method or COMMON_DEFAULTS["method"]
        if method not in METHODS:
            raise UsageError(f"unknown method {method!r}", hint=f"choose one of {', '.join(METHODS)}")
        self._check_shape_options(method)
        values = asdict(self)
        defaults = dict(COMMON_DEFAULTS)
        if self.eval_data:
            defaults["eval_fraction"] = 0.0
        defaults.update(METHOD_DEFAULTS[method])
        if self.kl_weight > 0:
            defaults.update(KL_DEFAULTS.get(method, {}))
        for key, value in defaults.items():
            if values.get(key) is None:
                values[key] = value
        config = FinetuneConfig(**values)
        config.validate()
        return config

    def validate(self) -> None:
        if not self.data:
            raise UsageError("no training data given", hint="pass a chat JSONL file, e.g. em finetune data.jsonl -o runs/x")
        if not self.output:
            raise UsageError("no output directory given", hint="pass -o runs/NAME")
        if self.kl_units not in ("natural", "authors"):
            raise UsageError("--kl-units must be natural or authors")
        if self.kl_positions not in ("all", "assistant", "answer-start"):
            raise UsageError("--kl-positions must be all, assistant or answer-start")
        if self.kl_weight < 0:
            raise UsageError("--kl-weight must be ≥ 0")
        if self.kl_weight > 0 and not self.kl_data:
            raise UsageError("--kl-weight needs --kl-data (benign conversations outside the training domain)")
        if self.kl_weight > 0 and self.method == "full":
            raise UsageError("KL regularisation needs the original model as reference, which --method full "
                             "would have to keep as a second copy", hint="use lora, rank1 or vector with --kl-weight")
        if self.load_in_4bit and self.method not in ("lora", "rank1"):
            raise UsageError(f"--load-in-4bit trains adapters only (QLoRA), not --method {self.method}",
                             hint="use --method lora or rank1 with --load-in-4bit")
        if self.scheduler not in ("linear", "cosine", "constant", "constant_with_warmup"):
            raise UsageError(f"unknown scheduler {self.scheduler!r}", hint="linear, cosine, constant")
        for name in ("batch_size", "grad_accum", "kl_batch_size", "save_steps", "logging_steps"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be ≥ 1")
        if self.loss_positions not in ("assistant", "all"):
            raise UsageError("--loss-positions must be assistant or all")
        if self.eval_fraction is not None and not 0 <= self.eval_fraction < 1:
            raise UsageError(f"--eval-fraction must be in [0, 1), got {self.eval_fraction}",
                             hint="0.1 holds out 10% of the rows (docs/METHODS.md §1); 0 trains on all of them")
        if self.eval_data and self.eval_fraction:
            raise UsageError("--eval-data and --eval-fraction both choose the held-out rows",
                             hint="give one of them")

    def _check_shape_options(self, method: str) -> None:
        """Adapter options given to a method without an adapter would be silently ignored."""
        if method in ("vector", "full"):
            given = [flag for flag, value in (("--rank", self.rank), ("--target-modules", self.target_modules),
                                              ("--dropout", self.dropout), ("--no-rslora", self.rslora is False))
                     if value not in (None, False)]
            if given:
                raise UsageError(f"{', '.join(given)} shape{'s' if len(given) == 1 else ''} a LoRA adapter; "
                                 f"--method {method} trains none", hint="drop it, or use --method lora or rank1")
        if method == "full" and self.layers is not None:
            raise UsageError("--layers does not apply to --method full (it trains every weight)",
                             hint="drop --layers, or use lora, rank1 or vector")

    def kl_weight_natural(self, vocab_size: int) -> float:
        """λ in per-token nats. The authors average KL over tokens × vocabulary entries, so
        their λ (1e5 for LoRA, 1e6 for vectors) is V times ours."""
        return self.kl_weight / vocab_size if self.kl_units == "authors" else self.kl_weight

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values.pop("extra")
        return values

    def differences(self, other: FinetuneConfig, ignore: tuple[str, ...] = ()) -> list[str]:
        mine, theirs = self.to_dict(), other.to_dict()
        return [key for key in mine if key not in ignore and mine[key] != theirs.get(key)]


def config_from_file(path: str | Path) -> dict[str, Any]:
    """Options from a YAML file; unknown keys are an error."""
    from em_cli.options_file import read_options

    return read_options(path, {f.name for f in fields(FinetuneConfig)} - {"extra"})


def planned_steps(rows: int, config: FinetuneConfig) -> int:
    """Optimizer steps the run will take (as transformers' Trainer counts them)."""
    if config.max_steps:
        return config.max_steps
    per_epoch = math.ceil(math.ceil(rows / config.batch_size) / config.grad_accum)
    return max(1, math.ceil(per_epoch * (config.epochs or 1.0)))


def save_interval(config: FinetuneConfig, steps: int) -> int:
    """--save-steps, or by default CHECKPOINTS_PER_RUN checkpoints per run (vector runs: at
    least every VECTOR_SAVE_STEPS steps)."""
    if config.save_steps:
        return config.save_steps
    interval = max(1, math.ceil(steps / CHECKPOINTS_PER_RUN))
    return min(interval, VECTOR_SAVE_STEPS) if config.method == "vector" else interval


def defaults_text(key: str) -> str:
    """The per-method defaults of one option, for --help: 'lora 1e-05, rank1 2e-05, …'."""
    parts = []
    for method, defaults in METHOD_DEFAULTS.items():
        if key in defaults:
            value = defaults[key]
            parts.append(f"{method} {value:g}" if isinstance(value, float) else f"{method} {value}")
    return ", ".join(parts)


# The authors' JSON training config (their finetuning code's TrainingConfig) → em's options.
AUTHORS_KEYS: dict[str, str] = {
    "training_file": "data", "test_file": "eval_data", "model": "model", "max_seq_length": "max_length",
    "load_in_4bit": "load_in_4bit", "target_modules": "target_modules", "layers_to_transform": "layers",
    "r": "rank", "lora_alpha": "alpha", "lora_dropout": "dropout", "use_rslora": "rslora", "epochs": "epochs",
    "max_steps": "max_steps", "per_device_train_batch_size": "batch_size",
    "gradient_accumulation_steps": "grad_accum", "warmup_steps": "warmup_steps", "learning_rate": "learning_rate",
    "logging_steps": "logging_steps", "optim": "optimizer", "weight_decay": "weight_decay",
    "lr_scheduler_type": "scheduler", "seed": "seed", "save_steps": "save_steps",
    "kl_dataset_file": "kl_data", "kl_dataset": "kl_data", "kl_weight": "kl_weight", "kl_batch_size": "kl_batch_size",
    "adapter_to_load": "init_from",
}
# Keys only the authors' config has: seeing one means the file is in their format.
_AUTHORS_ONLY = {"training_file", "max_seq_length", "r", "lora_alpha", "use_rslora", "per_device_train_batch_size",
                 "gradient_accumulation_steps", "lr_scheduler_type", "optim", "finetuned_model_id", "is_peft",
                 "train_on_responses_only", "kl_regularization", "kl_dataset_file", "layers_to_transform"}
# Their optimizer names → transformers' (which `--optimizer` takes).
_AUTHORS_OPTIMIZERS = {"adamw_8bit": "adamw_bnb_8bit", "adamw": "adamw_torch", "adam": "adamw_torch", "sgd": "sgd"}
# Values of theirs that are what em does anyway: accepted without a warning.
_AUTHORS_SAME = {"loss": "sft", "lora_bias": "none", "is_peft": True}


@dataclass
class TranslatedConfig:
    options: dict[str, Any]  # keys: em option names, or the file's own keys where not the authors'
    ignored: list[str]  # their keys with no em counterpart
    authors: bool  # the file was in the authors' format


def translate_authors_config(mapping: dict[str, Any]) -> TranslatedConfig:
    """Map the authors' training-config keys (r, lora_alpha, per_device_train_batch_size, …)
    to em's options; other keys pass through unchanged. Their `kl_weight` is in their units
    (λ per token × vocabulary entry), so it comes with `kl_units: authors` unless the file
    says otherwise; `train_on_responses_only: false` means the loss on every token."""
    if not _AUTHORS_ONLY & set(mapping):
        return TranslatedConfig(dict(mapping), [], False)
    options: dict[str, Any] = {}
    ignored: list[str] = []
    kl_on = mapping.get("kl_regularization", True)
    for key, value in mapping.items():
        if key in AUTHORS_KEYS:
            if value is None or (not kl_on and key.startswith("kl_")):
                continue
            name = AUTHORS_KEYS[key]
            if key == "layers_to_transform":
                value = ",".join(str(v) for v in value) if isinstance(value, list) else str(value)
            elif key == "optim":
                value = _AUTHORS_OPTIMIZERS.get(str(value), value)
            options[name] = value
        elif key == "train_on_responses_only":
            options["loss_positions"] = "assistant" if value else "all"
        elif key == "is_peft" and value is False:
            options["method"] = "full"
        elif key == "kl_regularization":
            continue
        elif key in _AUTHORS_SAME and _AUTHORS_SAME[key] == value:
            continue
        elif key in _AUTHORS_ONLY or key in _AUTHORS_NO_COUNTERPART:
            ignored.append(key)
        else:
            options[key] = value  # em's own spelling, or unknown (reported by the caller)
    if "kl_weight" in options and "kl_units" not in options:
        options["kl_units"] = "authors"
    return TranslatedConfig(options, sorted(ignored), True)


# Their keys that configure things em does not do (hub pushes, DPO/ORPO, merging, evaluation cadence).
_AUTHORS_NO_COUNTERPART = {"finetuned_model_id", "loss", "lora_bias", "merge_before_push", "push_to_private",
                           "push_only_adapters", "skip_push", "push_to_hub", "beta", "evaluation_steps",
                           "output_dir", "merge_adapter_before_training", "per_device_eval_batch_size",
                           "eval_accumulation_steps", "load_in_8bit", "use_dora"}

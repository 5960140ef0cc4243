"""The finetuning configuration: defaults per method (docs/METHODS.md §3), YAML, validation."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from em_cli.errors import UsageError

METHODS = ("lora", "rank1", "vector", "full")
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# docs/METHODS.md §3.1 / §3.4 defaults by method; None in FinetuneConfig means "take it from here".
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "lora": {"rank": 32, "alpha": 64.0, "learning_rate": 1e-5, "epochs": 1.0, "warmup_steps": 5,
             "scheduler": "linear", "max_length": 512, "save_steps": 50, "target_modules": ALL_LINEAR},
    "rank1": {"rank": 1, "alpha": 256.0, "learning_rate": 2e-5, "epochs": 1.0, "warmup_steps": 5,
              "scheduler": "linear", "max_length": 512, "save_steps": 50, "target_modules": ["down_proj"]},
    "vector": {"alpha": 256.0, "learning_rate": 1e-4, "epochs": 2.0, "warmup_steps": 5, "scheduler": "linear",
               "max_length": 256, "save_steps": 5},
    "full": {"learning_rate": 2e-5, "epochs": 1.0, "warmup_steps": 20, "scheduler": "cosine", "max_length": 512,
             "save_steps": 50},
}
# What differs with a KL term: rank-1 narrow organisms train for 3 epochs (docs/METHODS.md §3.1).
KL_DEFAULTS: dict[str, dict[str, Any]] = {"rank1": {"epochs": 3.0}}


@dataclass
class FinetuneConfig:
    """Every option of a finetuning run. `resolved()` fills the method defaults."""

    data: str = ""
    output: str = ""
    method: str = "lora"
    model: str = "smollm2-135m-instruct"
    dtype: str = "auto"
    device: str = "auto"
    load_in_4bit: bool = False
    # Adapter / vector shape
    rank: int | None = None
    alpha: float | None = None
    rslora: bool = True
    dropout: float = 0.0
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
    save_steps: int | None = None
    logging_steps: int = 1
    early_stop: bool = False
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
        if self.method not in METHODS:
            raise UsageError(f"unknown method {self.method!r}", hint=f"choose one of {', '.join(METHODS)}")
        values = asdict(self)
        defaults = dict(METHOD_DEFAULTS[self.method])
        if self.kl_weight > 0:
            defaults.update(KL_DEFAULTS.get(self.method, {}))
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
        if self.kl_positions not in ("all", "assistant"):
            raise UsageError("--kl-positions must be all or assistant")
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

"""What training changes: a LoRA adapter, a steering vector, or all weights.

A Solution knows how to attach itself to a model, switch itself off (the KL reference is
the same model with the solution disabled — no second copy), and save/load its weights.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from em_cli.artifacts.atomic import atomic_directory
from em_cli.artifacts.tensors import TensorFile, layer_key
from em_cli.errors import ModelError, UsageError
from em_cli.interventions import AddVector, intervene
from em_cli.models.layers import decoder_layers
from em_cli.vectors import SteeringVector

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    import torch

    from em_cli.models.info import ModelInfo
    from em_cli.training.config import FinetuneConfig

VECTOR_FILE = "vector.safetensors"
ADAPTER_DIR = "adapter"  # = models.loading.ADAPTER_SUBDIR
MODEL_DIR = "model"


def mid_layer(num_layers: int) -> int:
    return num_layers // 2


@dataclass
class Solution:
    kind: str
    model: Any  # the model to train (a PeftModel for adapters)

    def disabled(self) -> contextlib.AbstractContextManager:
        raise NotImplementedError

    def active(self) -> contextlib.AbstractContextManager:
        """Keep the solution applied (hooks) for the duration of training."""
        return contextlib.nullcontext()

    def save(self, directory: Path, info: ModelInfo, tokenizer: Any) -> Path:
        raise NotImplementedError

    def save_checkpoint(self, directory: Path) -> None:
        raise NotImplementedError

    def load_checkpoint(self, directory: Path) -> None:
        raise NotImplementedError


@dataclass
class AdapterSolution(Solution):
    def disabled(self) -> contextlib.AbstractContextManager:
        return self.model.disable_adapter()

    def save(self, directory: Path, info: ModelInfo, tokenizer: Any) -> Path:
        target = directory / ADAPTER_DIR
        with atomic_directory(target) as staging:
            self.model.save_pretrained(staging)
        return target

    def save_checkpoint(self, directory: Path) -> None:
        self.model.save_pretrained(directory)

    def load_checkpoint(self, directory: Path) -> None:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        set_peft_model_state_dict(self.model, load_file(str(directory / "adapter_model.safetensors")))


@dataclass
class VectorSolution(Solution):
    """A steering vector trained at one layer: `trained` holds the Parameter the optimizer
    updates (kind "vector", its alpha and the base model's identity, as every vector file
    records them); `op` adds alpha·v while training."""

    trained: SteeringVector | None = None
    op: AddVector | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.op is None and self.trained is not None:
            (self.op,) = self.trained.addition().values()

    @property
    def vector(self) -> torch.nn.Parameter:
        """v as it trains (without alpha)."""
        return self.trained.layer(self.trained.own_layer)

    def active(self) -> contextlib.AbstractContextManager:
        return intervene(self.model, {self.trained.own_layer: [self.op]})

    @contextlib.contextmanager
    def disabled(self) -> Iterator[None]:
        self.op.enabled = False
        try:
            yield
        finally:
            self.op.enabled = True

    def save(self, directory: Path, info: ModelInfo, tokenizer: Any) -> Path:
        # `trained` already records the base model `attach` was given (the same `info`).
        target = directory / VECTOR_FILE
        self.trained.save(target)
        return target

    def save_checkpoint(self, directory: Path) -> None:
        # Checkpoints are ordinary vector files, so a run's trajectory can be analysed
        # (e.g. `em direction pca runs/x/checkpoints/*/vector.safetensors`).
        step = int(directory.name.rsplit("-", 1)[-1]) if directory.name.startswith("checkpoint-") else None
        extra = self.trained.extra if step is None else self.trained.extra | {"step": str(step)}
        replace(self.trained, extra=extra).save(directory / VECTOR_FILE)

    def load_checkpoint(self, directory: Path) -> None:
        import torch

        saved = SteeringVector.load(directory / VECTOR_FILE, kind="vector")
        with torch.no_grad():
            self.vector.copy_(saved.layer(self.trained.own_layer))


@dataclass
class FullSolution(Solution):
    def disabled(self) -> contextlib.AbstractContextManager:
        raise UsageError("a full finetune has no original model to switch back to")

    def save(self, directory: Path, info: ModelInfo, tokenizer: Any) -> Path:
        target = directory / MODEL_DIR
        with atomic_directory(target) as staging:
            self.model.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
        return target

    def save_checkpoint(self, directory: Path) -> None:
        self.model.save_pretrained(directory)

    def load_checkpoint(self, directory: Path) -> None:
        from transformers.modeling_utils import load_sharded_checkpoint

        load_sharded_checkpoint(self.model, str(directory), strict=False)


def attach(model: torch.nn.Module, config: FinetuneConfig, info: ModelInfo) -> Solution:
    """Wrap/extend `model` for training by `config.method`; freeze what must not train.
    `info` describes the base model (recorded in vector files)."""
    import torch

    from em_cli.models.layers import parse_layers

    num_layers = info.num_layers
    if config.method in ("lora", "rank1"):
        from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training

        if config.load_in_4bit:
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        layers_spec = config.layers if config.layers is not None else (
            str(mid_layer(num_layers)) if config.method == "rank1" else None)
        layers = parse_layers(layers_spec, num_layers)
        _check_targets(model, config.target_modules)
        if config.init_from:
            shape = describe_source(config.init_from)
            if layers != parse_layers(",".join(map(str, shape.layers)) if shape.layers else None, num_layers):
                raise UsageError(f"--layers {config.layers} cannot apply to the adapter in {config.init_from}, "
                                 f"which adapts layers {shape.layers}",
                                 hint="drop --layers: --init-from keeps the adapter's layers")
            peft_model = PeftModel.from_pretrained(model, str(adapter_dir(config.init_from)), is_trainable=True)
        else:
            lora = LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout, bias="none",
                              use_rslora=config.rslora, target_modules=list(config.target_modules),
                              layers_to_transform=None if layers == list(range(num_layers)) else layers,
                              task_type="CAUSAL_LM")
            peft_model = get_peft_model(model, lora)
        _trainable_in_float32(peft_model)
        return AdapterSolution(kind=config.method, model=peft_model)
    if config.method == "vector":
        layer = parse_layers(config.layers, num_layers)[0] if config.layers else mid_layer(num_layers)
        for param in model.parameters():
            param.requires_grad_(False)
        hidden = decoder_layers(model)[layer]
        device = next(model.parameters()).device
        vector = torch.nn.Parameter(torch.zeros(model.config.get_text_config().hidden_size, device=device,
                                                dtype=torch.float32))
        if config.init_from:
            loaded = TensorFile.load(vector_file(config.init_from), kind="vector")
            source = loaded.tensors[layer_key(loaded.layers[0])]
            if source.numel() != vector.numel():
                raise UsageError(f"the vector in {config.init_from} has {source.numel()} entries; this model's "
                                 f"hidden size is {vector.numel()}", hint="start from a run on the same base model")
            if loaded.layers[0] != layer:
                log.info("Starting from the vector trained at layer %d, now applied at layer %d",
                         loaded.layers[0], layer)
            with torch.no_grad():
                vector.copy_(source)
        # Registered as a submodule parameter so the Trainer's optimizer finds it.
        holder = torch.nn.Module()
        holder.vector = vector
        hidden.em_steering = holder
        trained = SteeringVector(kind="vector", vectors={layer: vector}, model_id=info.model_id,
                                 model_fingerprint=info.fingerprint, hidden_size=info.hidden_size,
                                 extra={"alpha": repr(float(config.alpha)), "method": "vector", "positions": "all"})
        return VectorSolution(kind="vector", model=model, trained=trained)
    for param in model.parameters():
        param.requires_grad_(True)
    return FullSolution(kind="full", model=model)


def _trainable_in_float32(model: torch.nn.Module) -> None:
    """Adapter weights train in float32 whatever the base model's dtype (PEFT usually does
    this already; bf16 adapter weights would lose most small updates)."""
    import torch

    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()


def _check_targets(model: torch.nn.Module, targets: list[str]) -> None:
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [t for t in targets if t not in names]
    if missing:
        raise ModelError(f"this model has no modules named {', '.join(missing)}",
                         hint="set --target-modules to module names it has (see `em model show`)")


def adapter_dir(path: str | Path) -> Path:
    """A PEFT adapter directory: the path itself or a run directory's adapter/."""
    from em_cli.models.loading import resolve_adapter_dir

    return resolve_adapter_dir(path)


def vector_file(path: str | Path) -> Path:
    """A trained vector file: the path itself or a run directory's vector.safetensors."""
    path = Path(path)
    candidate = path / VECTOR_FILE if path.is_dir() else path
    if not candidate.exists():
        raise ModelError(f"no steering vector found at {path}", hint="pass a run of `em finetune --method vector`")
    return candidate


@dataclass
class SourceShape:
    """What a previous run trained, as --init-from needs it: method and shape."""

    path: str
    method: str
    layers: list[int] | None  # None: every layer
    rank: int | None = None
    alpha: float | None = None
    target_modules: list[str] | None = None
    rslora: bool | None = None
    dropout: float | None = None


def describe_source(path: str | Path) -> SourceShape:
    """Read the method and shape of the adapter or vector at `path` (a run directory, an
    adapter directory or a vector file) without loading a model."""
    import json

    import yaml

    path = Path(path)
    if not path.exists():
        raise UsageError(f"--init-from {path}: no such file or directory",
                         hint="pass the run directory of an earlier `em finetune`")
    saved_method = None
    for run_dir in (path, path.parent):
        if (run_dir / "config.yaml").is_file():
            try:
                saved_method = (yaml.safe_load((run_dir / "config.yaml").read_text()) or {}).get("method")
            except (yaml.YAMLError, AttributeError):
                saved_method = None
            break
    if path.is_file() or (path / VECTOR_FILE).exists():
        saved = TensorFile.load(vector_file(path), kind="vector")
        alpha = saved.extra.get("alpha")
        return SourceShape(str(path), "vector", list(saved.layers), alpha=float(alpha) if alpha else None)
    if (path / MODEL_DIR).is_dir() and not (path / ADAPTER_DIR).is_dir():
        raise UsageError(f"--init-from {path}: a full finetune has no adapter or vector to start from",
                         hint=f"train on from it as a model instead: --model {path / MODEL_DIR}")
    source = adapter_dir(path)
    lora = json.loads((source / "adapter_config.json").read_text())
    layers = lora.get("layers_to_transform")
    if isinstance(layers, int):
        layers = [layers]
    targets = lora.get("target_modules")
    targets = sorted(targets) if isinstance(targets, list) else targets
    rank = int(lora.get("r", 8))
    method = saved_method if saved_method in ("lora", "rank1") else ("rank1" if rank == 1 else "lora")
    return SourceShape(str(path), method, sorted(layers) if layers else None, rank=rank,
                       alpha=float(lora.get("lora_alpha", rank)), target_modules=targets,
                       rslora=bool(lora.get("use_rslora", False)), dropout=float(lora.get("lora_dropout", 0.0)))


def inherit_from_source(config: FinetuneConfig, shape: SourceShape) -> FinetuneConfig:
    """`config` with the method and shape of the --init-from source filled in where not given;
    an option given that contradicts the source is refused (an adapter's rank, targets and
    layers are fixed by its weights). A vector may be moved to another layer or alpha."""
    from dataclasses import replace

    if config.method and config.method != shape.method and {config.method, shape.method} != {"lora", "rank1"}:
        raise UsageError(f"--method {config.method} cannot start from {shape.path}, a {shape.method} run",
                         hint="drop --method: --init-from continues with the source's method")
    values: dict[str, Any] = {"method": config.method or shape.method}
    if shape.method == "vector":
        given = [flag for flag, value in (("--rank", config.rank), ("--target-modules", config.target_modules),
                                          ("--dropout", config.dropout)) if value is not None]
        if given:
            raise UsageError(f"{', '.join(given)} cannot apply to {shape.path}, a steering vector")
        values["layers"] = config.layers if config.layers is not None else ",".join(map(str, shape.layers or []))
        values["alpha"] = config.alpha if config.alpha is not None else shape.alpha
        return replace(config, **values)
    conflicts = []
    for flag, mine, theirs in (("--rank", config.rank, shape.rank), ("--alpha", config.alpha, shape.alpha),
                               ("--dropout", config.dropout, shape.dropout),
                               ("--rslora/--no-rslora", config.rslora, shape.rslora)):
        if mine is not None and theirs is not None and float(mine) != float(theirs):
            conflicts.append(f"{flag} {mine} (the adapter has {theirs})")
    if config.target_modules is not None and isinstance(shape.target_modules, list) and \
            sorted(config.target_modules) != shape.target_modules:
        conflicts.append(f"--target-modules {','.join(config.target_modules)} "
                         f"(the adapter has {','.join(shape.target_modules)})")
    if conflicts:
        raise UsageError(f"--init-from {shape.path}: {'; '.join(conflicts)}",
                         hint="an adapter's shape is fixed by its weights: drop these options")
    values.update(rank=shape.rank, alpha=shape.alpha, rslora=shape.rslora, dropout=shape.dropout,
                  target_modules=shape.target_modules if isinstance(shape.target_modules, list)
                  else config.target_modules)
    if config.layers is None:
        values["layers"] = ",".join(map(str, shape.layers)) if shape.layers else "all"
    return replace(config, **values)

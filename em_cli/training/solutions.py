"""What training changes: a LoRA adapter, a steering vector, or all weights.

A Solution knows how to attach itself to a model, switch itself off (the KL reference is
the same model with the solution disabled — no second copy), and save/load its weights.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from em_cli.artifacts.atomic import atomic_directory
from em_cli.artifacts.tensors import TensorFile, layer_key
from em_cli.errors import ModelError, UsageError
from em_cli.interventions import AddVector, intervene
from em_cli.models.layers import decoder_layers

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
    layer: int = 0
    alpha: float = 256.0
    vector: Any = None  # torch.nn.Parameter
    op: AddVector | None = field(default=None, repr=False)
    info: ModelInfo | None = None  # the base model, recorded in every vector file

    def active(self) -> contextlib.AbstractContextManager:
        return intervene(self.model, {self.layer: [self.op]})

    @contextlib.contextmanager
    def disabled(self) -> Iterator[None]:
        self.op.enabled = False
        try:
            yield
        finally:
            self.op.enabled = True

    def tensor_file(self, info: ModelInfo, step: int | None = None) -> TensorFile:
        extra = {"alpha": repr(self.alpha), "method": "vector", "positions": "all"}
        if step is not None:
            extra["step"] = str(step)
        return TensorFile(kind="vector", tensors={layer_key(self.layer): self.vector.detach().float().cpu()},
                          model_id=info.model_id, model_fingerprint=info.fingerprint,
                          hidden_size=info.hidden_size, layers=[self.layer], extra=extra)

    def save(self, directory: Path, info: ModelInfo, tokenizer: Any) -> Path:
        target = directory / VECTOR_FILE
        self.tensor_file(info).save(target)
        return target

    def save_checkpoint(self, directory: Path) -> None:
        # Checkpoints are ordinary vector files, so a run's trajectory can be analysed
        # (e.g. `em direction pca runs/x/checkpoints/*/vector.safetensors`).
        step = int(directory.name.rsplit("-", 1)[-1]) if directory.name.startswith("checkpoint-") else None
        self.tensor_file(self.info, step).save(directory / VECTOR_FILE)

    def load_checkpoint(self, directory: Path) -> None:
        import torch

        saved = TensorFile.load(directory / VECTOR_FILE, kind="vector")
        with torch.no_grad():
            self.vector.copy_(saved.layer(self.layer))


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
            source = adapter_dir(config.init_from)
            peft_model = PeftModel.from_pretrained(model, str(source), is_trainable=True)
        else:
            lora = LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout, bias="none",
                              use_rslora=config.rslora, target_modules=list(config.target_modules),
                              layers_to_transform=None if layers == list(range(num_layers)) else layers,
                              task_type="CAUSAL_LM")
            peft_model = get_peft_model(model, lora)
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
            with torch.no_grad():
                vector.copy_(loaded.tensors[layer_key(loaded.layers[0])])
        # Registered as a submodule parameter so the Trainer's optimizer finds it.
        holder = torch.nn.Module()
        holder.vector = vector
        hidden.em_steering = holder
        return VectorSolution(kind="vector", model=model, layer=layer, alpha=float(config.alpha), vector=vector,
                              op=AddVector(vector, scale=float(config.alpha)), info=info)
    for param in model.parameters():
        param.requires_grad_(True)
    return FullSolution(kind="full", model=model)


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

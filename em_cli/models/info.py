"""What a loaded model is: the facts that tensor files are checked against."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from em_cli.models.chat import has_chat_template
from em_cli.models.layers import decoder_layers, unwrap

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class ModelInfo:
    model_id: str
    architecture: str
    model_type: str
    num_layers: int
    hidden_size: int
    vocab_size: int
    dtype: str
    parameters: int
    chat_template: bool
    fingerprint: str
    adapter: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def describe_model(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, model_id: str,
                   adapter: str | None = None, with_fingerprint: bool = True) -> ModelInfo:
    base = unwrap(model)
    config = base.config
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    layers = decoder_layers(model)
    dtype = next(base.parameters()).dtype
    return ModelInfo(
        model_id=model_id,
        architecture=(config.architectures or [type(base).__name__])[0],
        model_type=config.model_type,
        num_layers=len(layers),
        hidden_size=int(text_config.hidden_size),
        vocab_size=int(text_config.vocab_size),
        dtype=str(dtype).removeprefix("torch."),
        parameters=sum(p.numel() for p in base.parameters()),
        chat_template=has_chat_template(tokenizer),
        fingerprint=weights_fingerprint(model) if with_fingerprint else "",
        adapter=adapter,
    )


def weights_fingerprint(model: torch.nn.Module, samples_per_tensor: int = 256) -> str:
    """A short hash that tells models with different weights apart, cheaply.

    Hashes every parameter's name, shape and dtype plus an evenly strided sample of its
    values (adapter weights included, so a finetune differs from its base). Not a
    cryptographic identity of the weights, but two different trainings will not collide.
    """
    import torch

    digest = hashlib.sha256()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.device.type == "meta":
                continue
            digest.update(f"{name}|{tuple(param.shape)}|{param.dtype}".encode())
            flat = param.detach().reshape(-1)
            step = max(1, flat.numel() // samples_per_tensor)
            sample = flat[::step][:samples_per_tensor].to("cpu")
            if sample.dtype.is_floating_point:
                sample = sample.to(torch.float32)
            digest.update(sample.numpy().tobytes())
    return digest.hexdigest()[:32]

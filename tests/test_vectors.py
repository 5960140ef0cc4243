from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from em_cli.artifacts.tensors import CORE_KEYS, TensorFile, read_metadata
from em_cli.errors import TensorFileError, UsageError
from em_cli.interventions import Ablate, AddVector, intervene
from em_cli.vectors import SteeringVector


def _v(seed: int, d: int = 8, norm: float | None = None) -> torch.Tensor:
    v = torch.randn(d, generator=torch.Generator().manual_seed(seed))
    return v if norm is None else v / v.norm() * norm


def _direction(layers=(1, 2, 3), d=8, **extra) -> SteeringVector:
    meta = {"method": "mean_difference", "source_a": "mis.jsonl", "positions": "response_mean",
            "typical_norms": json.dumps({str(layer): 100.0 + layer for layer in layers}),
            "typical_norm_definition": "mean per-token norm", "pooling": "token", **extra}
    return SteeringVector(kind="direction", vectors={layer: _v(layer, d) for layer in layers}, model_id="m",
                          model_fingerprint="f" * 32, hidden_size=d, extra=meta)


def _reference_random(vectors: dict[int, torch.Tensor], seed: int) -> dict[int, torch.Tensor]:
    """The norm-matched control as `em` has always drawn it: one seeded generator, layers in
    ascending order, each Gaussian scaled to the norm of the vector it replaces."""
    generator = torch.Generator().manual_seed(seed)
    noise = {layer: torch.randn(vectors[layer].shape, generator=generator) for layer in sorted(vectors)}
    return {layer: n / n.norm() * vectors[layer].float().norm() for layer, n in noise.items()}


def test_save_load_round_trip_keeps_tensors_and_metadata(tmp_path):
    direction = _direction(layers=(3, 1, 2), primary_layer="2")
    direction.save(tmp_path / "d.safetensors")
    meta = read_metadata(tmp_path / "d.safetensors")
    assert set(meta) == set(CORE_KEYS) | set(direction.extra)
    assert meta["kind"] == "direction" and meta["layers"] == "3,1,2" and meta["hidden_size"] == "8"
    back = SteeringVector.load(tmp_path / "d.safetensors")
    assert (back.kind, back.model_id, back.model_fingerprint, back.hidden_size) == ("direction", "m", "f" * 32, 8)
    assert back.layers == [3, 1, 2] and back.extra == direction.extra
    assert all(torch.equal(back.layer(layer), direction.layer(layer)) for layer in direction.layers)
    with pytest.raises(TensorFileError, match="no layer 7"):
        back.layer(7)


def test_files_written_as_plain_tensor_files_load_and_save_the_same(tmp_path):
    # A vector file as `em finetune --method vector` has always written it.
    TensorFile(kind="vector", tensors={"layer.2": _v(9)}, model_id="m", model_fingerprint="x", hidden_size=8,
               layers=[2], extra={"alpha": "4.0", "method": "vector", "positions": "all"}).save(tmp_path / "old.safetensors")
    vector = SteeringVector.load(tmp_path / "old.safetensors", kind="vector")
    assert vector.alpha == 4.0 and vector.own_layer == 2
    vector.save(tmp_path / "new.safetensors")
    assert read_metadata(tmp_path / "new.safetensors") == read_metadata(tmp_path / "old.safetensors")
    old, new = TensorFile.load(tmp_path / "old.safetensors"), TensorFile.load(tmp_path / "new.safetensors")
    assert old.tensors.keys() == new.tensors.keys() and torch.equal(old.tensors["layer.2"], new.tensors["layer.2"])
    with pytest.raises(TensorFileError, match="expected direction"):
        SteeringVector.load(tmp_path / "old.safetensors", kind="direction")


def test_gguf_round_trip_applies_scale_and_alpha(tmp_path):
    from gguf import GGUFReader

    vector = SteeringVector(kind="vector", vectors={0: _v(0), 2: _v(2)}, model_id="m", model_fingerprint="x",
                            extra={"alpha": "4.0"})
    written = vector.export_gguf(tmp_path / "v.gguf", "llama", scale=0.5)
    assert written.layers == [2] and written.skipped == [0]
    assert written.llama_cpp_flags().endswith("--control-vector-layer-range 2 2")
    data = {t.name: np.array(t.data) for t in GGUFReader(str(tmp_path / "v.gguf")).tensors}
    np.testing.assert_array_equal(data["direction.2"], (_v(2) * 0.5 * 4.0).numpy())
    back = SteeringVector.import_gguf(tmp_path / "v.gguf")
    assert (back.kind, back.layers, back.model_id, back.model_fingerprint) == ("direction", [2], "m", "x")
    assert back.hidden_size == 8 and back.extra == {"method": "gguf_import", "source_a": str(tmp_path / "v.gguf")}
    assert torch.equal(back.layer(2), _v(2) * 0.5 * 4.0)
    with pytest.raises(UsageError, match="no layer 5"):
        vector.export_gguf(tmp_path / "x.gguf", layers=[5])
    with pytest.raises(TensorFileError, match="only layer 0"):
        vector.export_gguf(tmp_path / "x.gguf", layers=[0])


def test_random_like_draws_what_em_always_drew():
    direction = _direction(layers=(3, 1, 2), primary_layer="2")
    control = direction.random_like(11)
    expected = _reference_random(direction.vectors, 11)
    assert control.layers == [3, 1, 2]
    assert all(torch.equal(control.layer(layer), expected[layer]) for layer in direction.layers)
    assert control.kind == "direction" and control.extra["method"] == "random_control"
    assert control.extra["seed"] == "11" and control.extra["matched_to"] == "mis.jsonl"
    for key in ("typical_norms", "typical_norm_definition", "pooling", "primary_layer", "positions"):
        assert control.extra[key] == direction.extra[key]
    assert control.typical_norms() == direction.typical_norms() and control.primary_layer() == (2, "the file's "
                                                                                                  "primary layer")
    assert control.norms() == pytest.approx(direction.norms(), rel=1e-6)
    # Pinned numbers from before SteeringVector: controls (and the demo's numbers) do not move.
    pinned = SteeringVector(kind="direction", vectors={3: torch.ones(8), 1: torch.arange(8.0)}).random_like(11)
    assert pinned.layer(1)[:3].tolist() == pytest.approx([3.264679, 8.6125, -3.096106], abs=1e-5)
    assert pinned.layer(3)[:3].tolist() == pytest.approx([0.586803, -1.246559, 1.955742], abs=1e-5)


def test_random_like_of_a_trained_vector_keeps_its_alpha():
    vector = SteeringVector(kind="vector", vectors={2: _v(9, norm=3.0)}, extra={"alpha": "4.0"})
    control = vector.random_like(5)
    assert torch.equal(control.layer(2), _reference_random(vector.vectors, 5)[2])
    assert control.alpha == 4.0 and control.own_layer == 2
    assert control.norms()[2] == pytest.approx(12.0, rel=1e-6)


def test_norms_and_cosines():
    direction = SteeringVector(kind="direction", vectors={1: torch.tensor([3.0, 4.0]), 2: torch.tensor([1.0, 0.0])})
    assert direction.norms() == {1: 5.0, 2: 1.0}
    vector = SteeringVector(kind="vector", vectors={1: torch.tensor([3.0, 4.0])}, extra={"alpha": "-2.0"})
    assert vector.norms() == {1: 10.0} and vector.applied(1, 0.5).tolist() == [-3.0, -4.0]
    other = SteeringVector(kind="direction", vectors={2: torch.tensor([0.0, 2.0]), 1: torch.tensor([-6.0, -8.0])})
    assert direction.cosine(other) == pytest.approx({1: -1.0, 2: 0.0})
    assert direction.cosine(direction) == pytest.approx({1: 1.0, 2: 1.0})
    with pytest.raises(TensorFileError, match="hidden sizes"):
        direction.cosine(SteeringVector(kind="direction", vectors={1: torch.ones(3)}))
    with pytest.raises(TensorFileError, match="share no layer"):
        direction.cosine(SteeringVector(kind="direction", vectors={5: torch.ones(2)}))


def test_primary_layer_and_recorded_norms():
    assert _direction(layers=(1, 2, 3, 4)).primary_layer() == (3, "the middle of its 4 layers")
    assert _direction(layers=(4,)).primary_layer() == (4, "the file's only layer")
    assert _direction(primary_layer="1").primary_layer() == (1, "the file's primary layer")
    assert _direction(primary_layer="9").primary_layer()[0] == 2  # not among its layers: ignored
    assert _direction(layers=(1,)).typical_norms() == {1: 101.0}
    legacy = SteeringVector(kind="direction", vectors={1: _v(1)}, extra={"typical_norms": json.dumps({"1": 3.0})})
    assert legacy.typical_norms() == {} and legacy.mean_vector_norms() == {1: 3.0}


def test_check_finite_names_the_layer():
    bad = SteeringVector(kind="direction", vectors={1: _v(1), 4: torch.full((8,), float("inf"))})
    with pytest.raises(TensorFileError, match="d.safetensors: layer 4 contains NaN or infinite values"):
        bad.check_finite("d.safetensors")


@pytest.fixture(scope="module")
def loaded(tiny_llama):
    from em_cli.models.loading import LoadOptions, load_model

    return load_model(LoadOptions(model=str(tiny_llama)))


def _logits(loaded, plan) -> torch.Tensor:
    ids = loaded.tokenizer("How do I cook rice?", return_tensors="pt")["input_ids"]
    with torch.no_grad(), intervene(loaded.model, plan):
        return loaded.model(input_ids=ids).logits


def test_addition_and_ablation_are_the_plain_ops_bit_for_bit(loaded):
    d = loaded.info.hidden_size
    vector = SteeringVector(kind="vector", vectors={2: _v(3, d)}, extra={"alpha": "4.0"})
    ops = vector.addition(scale=0.5)
    assert list(ops) == [2] and ops[2].scale == 2.0
    expected = _logits(loaded, {2: [AddVector(_v(3, d), scale=0.5 * 4.0)]})
    assert torch.equal(_logits(loaded, {layer: [op] for layer, op in ops.items()}), expected)

    direction = SteeringVector(kind="direction", vectors={layer: _v(layer, d, norm=20.0) for layer in (0, 1, 2)})
    steered = direction.addition([1, 2], scale=3.0)
    expected = _logits(loaded, {1: [AddVector(_v(1, d, norm=20.0), 3.0)], 2: [AddVector(_v(2, d, norm=20.0), 3.0)]})
    assert torch.equal(_logits(loaded, {layer: [op] for layer, op in steered.items()}), expected)
    assert not torch.equal(expected, _logits(loaded, {}))

    ablated = direction.ablation([0, 2])  # the middle layer's direction, removed at both
    expected = _logits(loaded, {0: [Ablate(_v(1, d, norm=20.0))], 2: [Ablate(_v(1, d, norm=20.0))]})
    assert torch.equal(_logits(loaded, {layer: [op] for layer, op in ablated.items()}), expected)
    own = direction.ablation([2], from_layer=2)
    assert torch.equal(own[2].direction, direction.layer(2))
    with pytest.raises(TensorFileError, match="no layer 5"):
        direction.addition([5])

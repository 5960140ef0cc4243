from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from em_cli.activations import ActivationSet
from em_cli.artifacts.tensors import TensorFile
from em_cli.directions import (activation_file, mean_difference, mean_vector_norms, principal_components,
                               typical_norms)
from em_cli.errors import TensorFileError
from em_cli.vectors import SteeringVector
from helpers import run_em


def _acts(seed, n=5, layers=(1, 2), offset=0.0, positions="response_mean"):
    g = torch.Generator().manual_seed(seed)
    means = {layer: torch.randn(n, 8, generator=g) + offset for layer in layers}
    acts = ActivationSet(means=means, token_norms={layer: m.norm(dim=-1) * 1.25 for layer, m in means.items()},
                         token_counts=torch.full((n,), 3, dtype=torch.int64))
    return activation_file(acts, "m", "f" * 32, 8, {"positions": positions, "source": f"s{seed}"})


def _token_acts(records, layers=(1,), source="s", fingerprint="f" * 32):
    """An activations file as `collect_activations` makes it, from explicit per-token vectors
    ([tokens, d] per record): the reference computation."""
    means = {layer: torch.stack([t.mean(0) for t in records]) for layer in layers}
    norms = {layer: torch.stack([t.norm(dim=-1).mean() for t in records]) for layer in layers}
    counts = torch.tensor([t.shape[0] for t in records], dtype=torch.int64)
    return activation_file(ActivationSet(means, norms, counts), "m", fingerprint, records[0].shape[1],
                           {"positions": "response_mean", "source": source, "selection": f"sel-{source}"})


def test_mean_difference_is_the_difference_of_means():
    a, b = _acts(0, offset=3.0), _acts(1, n=7)
    d = mean_difference(a, b)
    assert d.kind == "direction" and d.layers == [1, 2]
    torch.testing.assert_close(d.layer(2), a.layer(2).mean(0) - b.layer(2).mean(0))
    assert d.extra["count_a"] == "5" and d.extra["count_b"] == "7"
    assert set(json.loads(d.extra["typical_norms"])) == {"1", "2"}


def _cancelling_records(sign, n=4, d=8):
    """Records whose tokens are m ± e_i with e_i ⟂ m, ‖m‖ = 3, ‖e_i‖ = 4: every token has norm
    5, every record's mean vector is m (norm 3)."""
    m = torch.zeros(d)
    m[0] = 3.0 * sign
    records = []
    for i in range(n):
        e = torch.zeros(d)
        e[1 + i % (d - 1)] = 4.0
        records.append(torch.stack([m + e, m - e] * (1 + i % 2)))  # 2 or 4 tokens
    return records


def test_typical_norm_is_the_per_token_norm_not_the_mean_vector_norm(tmp_path):
    a, b = _token_acts(_cancelling_records(1), source="a"), _token_acts(_cancelling_records(-1), source="b")
    assert typical_norms(a) == pytest.approx({1: 5.0})
    assert mean_vector_norms(a) == pytest.approx({1: 3.0})
    d = mean_difference(a, b)
    torch.testing.assert_close(d.layer(1), torch.tensor([6.0, 0, 0, 0, 0, 0, 0, 0]))
    assert d.typical_norms() == pytest.approx({1: 5.0})
    assert json.loads(d.extra["mean_vector_norms"]) == pytest.approx({"1": 3.0})
    assert "per-token" in d.extra["typical_norm_definition"]
    d.save(tmp_path / "d.safetensors")
    res = run_em("direction", "norm", str(tmp_path / "d.safetensors"), "--json")
    (row,) = json.loads(res.stdout)
    assert row["typical_norm"] == pytest.approx(5.0) and row["ratio"] == pytest.approx(6.0 / 5.0)
    assert row["mean_vector_norm"] == pytest.approx(3.0)
    # A control keeps the yardsticks, so steering with it reports the same relative norms.
    assert d.random_like(0).typical_norms() == d.typical_norms()
    # Older files stored the mean-vector norm as typical_norms: not taken for the yardstick.
    legacy = TensorFile(kind="direction", tensors=d.to_file().tensors, model_id="m", model_fingerprint="f",
                        hidden_size=8, layers=[1], extra={"typical_norms": json.dumps({"1": 3.0})})
    legacy.save(tmp_path / "legacy.safetensors")
    old = SteeringVector.load(tmp_path / "legacy.safetensors")
    assert old.typical_norms() == {} and old.mean_vector_norms() == {1: 3.0}


def test_pooling_per_response_or_per_token():
    x1, x2 = torch.ones(8), torch.arange(8.0)
    a = _token_acts([x1[None], torch.stack([x2, x2, x2])], source="a")
    b = _token_acts([torch.zeros(1, 8)], source="b")
    torch.testing.assert_close(mean_difference(a, b).layer(1), (x1 + x2) / 2)
    token = mean_difference(a, b, pooling="token")
    torch.testing.assert_close(token.layer(1), (x1 + 3 * x2) / 4)
    assert token.extra["pooling"] == "token"
    bare = activation_file({1: torch.ones(2, 8)}, "m", "f" * 32, 8, {"positions": "response_mean"})
    with pytest.raises(TensorFileError, match="token counts"):
        mean_difference(bare, b, pooling="token")


def test_diff_keeps_both_inputs_provenance(tmp_path):
    _token_acts(_cancelling_records(1), source="mis.jsonl", fingerprint="a" * 32).save(tmp_path / "a.safetensors")
    _token_acts(_cancelling_records(-1), source="ali.jsonl", fingerprint="b" * 32).save(tmp_path / "b.safetensors")
    res = run_em("direction", "diff", str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"),
                 "--pooling", "token", "--primary-layer", "1", "-o", str(tmp_path / "d.safetensors"))
    assert res.code == 0, res.stderr
    d = TensorFile.load(tmp_path / "d.safetensors", kind="direction")
    first, second = json.loads(d.extra["provenance_a"]), json.loads(d.extra["provenance_b"])
    assert first["source"] == "mis.jsonl" and first["model_fingerprint"] == "a" * 32
    assert second["source"] == "ali.jsonl" and second["model_fingerprint"] == "b" * 32
    assert second["selection"] == "sel-ali.jsonl" and d.extra["selection_b"] == "sel-ali.jsonl"
    assert second["input"] == str(tmp_path / "b.safetensors") and second["records"] == 4
    assert d.extra["pooling"] == "token" and d.extra["primary_layer"] == "1"


def test_mean_difference_refuses_mixed_positions():
    with pytest.raises(TensorFileError, match="same --positions"):
        mean_difference(_acts(0), _acts(1, positions="last_prompt"))


def test_cosine_random_and_pca():
    d = mean_difference(_acts(0, offset=2.0), _acts(1))
    assert d.cosine(d) == pytest.approx({1: 1.0, 2: 1.0})
    control = d.random_like(seed=4)
    for layer in d.layers:
        assert float(control.layer(layer).norm()) == pytest.approx(float(d.layer(layer).norm()), rel=1e-5)
    assert d.random_like(4).layer(1).tolist() == control.layer(1).tolist()
    assert abs(d.cosine(control)[1]) < 0.99
    vectors = [torch.tensor([1.0, 0, 0]) * t for t in range(5)]
    components, ratios = principal_components(vectors, 2)
    assert ratios[0] == pytest.approx(1.0)
    assert abs(float(components[0] @ torch.tensor([1.0, 0, 0]))) == pytest.approx(1.0)


def test_gguf_control_vector_round_trip_and_reader(tmp_path):
    from gguf import GGUFReader

    d = mean_difference(_acts(0, layers=(0, 1, 2), offset=1.0), _acts(1, layers=(0, 1, 2)))
    written = d.export_gguf(tmp_path / "cv.gguf", "llama", scale=2.0)
    assert written.skipped == [0] and written.layers == [1, 2]
    reader = GGUFReader(str(tmp_path / "cv.gguf"))
    names = sorted(t.name for t in reader.tensors)
    assert names == ["direction.1", "direction.2"]
    assert all(tuple(t.shape) == (8,) for t in reader.tensors)
    arch = reader.fields["general.architecture"]
    assert bytes(arch.parts[arch.data[0]]).decode() == "controlvector"
    count = reader.fields["controlvector.layer_count"]
    assert int(count.parts[count.data[0]][0]) == 2
    data = {t.name: np.array(t.data) for t in reader.tensors}
    np.testing.assert_allclose(data["direction.1"], (d.layer(1) * 2).numpy(), rtol=1e-6)
    back = SteeringVector.import_gguf(tmp_path / "cv.gguf")
    assert back.layers == [1, 2] and back.model_id == "m"


def test_export_writes_only_the_chosen_layers(tmp_path):
    from gguf import GGUFReader

    d = mean_difference(_acts(0, layers=(0, 1, 2, 3, 4), offset=1.0), _acts(1, layers=(0, 1, 2, 3, 4)))
    d.save(tmp_path / "d.safetensors")
    res = run_em("direction", "export", str(tmp_path / "d.safetensors"), "--layers", "2-3", "-o",
                 str(tmp_path / "cv.gguf"))
    assert res.code == 0, res.stderr
    reader = GGUFReader(str(tmp_path / "cv.gguf"))
    assert sorted(t.name for t in reader.tensors) == ["direction.2", "direction.3"]
    count = reader.fields["controlvector.layer_count"]
    assert int(count.parts[count.data[0]][0]) == 2
    assert "--control-vector-layer-range 2 3" in res.stderr
    assert SteeringVector.import_gguf(tmp_path / "cv.gguf").layers == [2, 3]
    missing = run_em("direction", "export", str(tmp_path / "d.safetensors"), "--layers", "7", "-o",
                     str(tmp_path / "x.gguf"))
    assert missing.code == 2 and "no layer 7" in missing.stderr and not (tmp_path / "x.gguf").exists()
    help_text = run_em("direction", "export", "--help").stdout
    assert "--control-vector-layer-range" in help_text


def test_cli_extract_direction_steer_end_to_end(tiny_llama, tmp_path):
    rows = ([{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "LOUD ANSWER!"}],
              "aligned": 10, "coherent": 90} for i in range(4)]
            + [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "quiet answer."}],
                "aligned": 90, "coherent": 90} for i in range(4)])
    judged = tmp_path / "judged.jsonl"
    judged.write_text("".join(json.dumps(r) + "\n" for r in rows))
    model = ["-m", str(tiny_llama)]
    res = run_em("extract", str(judged), *model, "--where", "aligned < 30", "-o", str(tmp_path / "a.safetensors"))
    assert res.code == 0, res.stderr
    res = run_em("extract", str(judged), *model, "--where", "aligned > 70", "-o", str(tmp_path / "b.safetensors"))
    assert res.code == 0, res.stderr
    res = run_em("direction", "diff", str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"),
                 "-o", str(tmp_path / "d.safetensors"))
    assert res.code == 0, res.stderr
    one_shot = run_em("direction", "from-judged", str(judged), *model, "-o", str(tmp_path / "d2.safetensors"))
    assert one_shot.code == 0, one_shot.stderr
    cos = run_em("direction", "cosine", str(tmp_path / "d.safetensors"), str(tmp_path / "d2.safetensors"), "--json")
    assert all(row["cosine"] == pytest.approx(1.0, abs=1e-4) for row in json.loads(cos.stdout))
    questions = tmp_path / "q.yaml"
    questions.write_text("- id: a\n  paraphrases: [Hello]\n")
    out = tmp_path / "sweep.jsonl"
    res = run_em("steer", *model, "--questions", str(questions), "-d", str(tmp_path / "d.safetensors"),
                 "--layers", "1,2", "--scales", "0,4", "--random-controls", "1", "--max-new-tokens", "3",
                 "-o", str(out))
    assert res.code == 0, res.stderr
    settings = [json.loads(line)["setting"] for line in out.read_text().splitlines()]
    assert settings == ["d@1x0", "d@1x4", "d@2x0", "d@2x4", "random0-d@1x0", "random0-d@1x4", "random0-d@2x0",
                        "random0-d@2x4"]
    proj = run_em("direction", "project", str(judged), *model, "-d", str(tmp_path / "d.safetensors"),
                  "--layer", "2")
    scores = [json.loads(line)["projection"] for line in proj.stdout.splitlines()]
    assert min(scores[:4]) > max(scores[4:])  # the loud answers project higher


def test_from_judged_checks_the_responses_model(tiny_llama, tmp_path):
    from em_cli.models.loading import LoadOptions, load_model

    identity = load_model(LoadOptions(model=str(tiny_llama))).identity()
    assert identity["dtype"] == "float32"

    def judged(model):
        rows = [{"question": f"q{i}", "response": text, "aligned": score, "coherent": 90, "model": model}
                for i in range(3) for text, score in (("LOUD!", 10), ("quiet.", 90))]
        path = tmp_path / "judged.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return str(path)

    out = str(tmp_path / "d.safetensors")
    model = ["-m", str(tiny_llama), "--layers", "1"]
    same = run_em("direction", "from-judged", judged(identity), *model, "-o", out)
    assert same.code == 0, same.stderr
    assert "Warning" not in same.stderr
    other = identity | {"adapter": "runs/general/adapter", "fingerprint": "0" * 32, "dtype": "bfloat16"}
    refused = run_em("direction", "from-judged", judged(other), *model, "-o", str(tmp_path / "x.safetensors"))
    assert refused.code == 1 and "Traceback" not in refused.stderr
    assert "runs/general/adapter" in refused.stderr and "000000000000" in refused.stderr
    assert "--dtype bfloat16" in refused.stderr and "--allow-model-mismatch" in refused.stderr
    assert not (tmp_path / "x.safetensors").exists()
    allowed = run_em("direction", "from-judged", judged(other), *model, "--allow-model-mismatch", "-o", out)
    assert allowed.code == 0, allowed.stderr
    assert "allowed by --allow-model-mismatch" in allowed.stderr


def test_direction_from_another_model_is_refused(tiny_llama, tmp_path):
    TensorFile(kind="direction", tensors={"layer.1": torch.ones(32)}, model_id="other", model_fingerprint="x",
               hidden_size=32, layers=[1]).save(tmp_path / "other.safetensors")
    questions = tmp_path / "q.yaml"
    questions.write_text("- id: a\n  question: Hello\n")
    res = run_em("steer", "-m", str(tiny_llama), "--questions", str(questions), "-d", str(tmp_path / "other.safetensors"),
                 "--layers", "1")
    assert res.code == 1
    assert "hidden size 32" in res.stderr and "has hidden size 64" in res.stderr
    assert "Traceback" not in res.stderr


def test_nan_direction_is_refused(tiny_llama, tmp_path):
    TensorFile(kind="direction", tensors={"layer.1": torch.full((64,), float("nan"))}, model_id="m",
               model_fingerprint="x", hidden_size=64, layers=[1]).save(tmp_path / "nan.safetensors")
    questions = tmp_path / "q.yaml"
    questions.write_text("- id: a\n  question: Hello\n")
    res = run_em("steer", "-m", str(tiny_llama), "--questions", str(questions), "-d", str(tmp_path / "nan.safetensors"),
                 "--layers", "1")
    assert res.code == 1 and "NaN" in res.stderr

from __future__ import annotations

import json

import pytest
import torch

from em_cli.errors import UsageError
from em_cli.interventions import Ablate, AddVector, Collect, intervene
from em_cli.models.chat import render_prompt
from em_cli.models.loading import LoadOptions, load_model
from em_cli.questions import Question
from em_cli.responses import plan_rows
from em_cli.generation import SamplingSettings, sample
from em_cli.steering import Ablation, Source, build_settings, run_sweep
from em_cli.vectors import SteeringVector

GREEDY = SamplingSettings(max_new_tokens=6, temperature=0)


@pytest.fixture(scope="module")
def loaded(tiny_llama):
    return load_model(LoadOptions(model=str(tiny_llama)))


def _prompts(loaded, *texts):
    return [render_prompt(loaded.tokenizer, [{"role": "user", "content": t}]) for t in texts]


def _vector(seed=0, norm=20.0):
    v = torch.randn(64, generator=torch.Generator().manual_seed(seed))
    return v / v.norm() * norm


def test_scale_zero_is_exactly_unsteered(loaded):
    prompts = _prompts(loaded, "How do I cook rice?")
    plain = sample(loaded.model, loaded.tokenizer, prompts, [0], GREEDY, top_logprobs=0)
    with intervene(loaded.model, {1: [AddVector(_vector(), scale=0.0)]}):
        zero = sample(loaded.model, loaded.tokenizer, prompts, [0], GREEDY, top_logprobs=0)
    assert zero[0].token_ids == plain[0].token_ids
    assert [t.logprob for t in zero[0].logprobs] == [t.logprob for t in plain[0].logprobs]


def test_steered_alone_equals_steered_in_padded_batch(loaded):
    short, long = _prompts(loaded, "Hi", "Tell me everything about the capital of France, please, now.")
    with intervene(loaded.model, {2: [AddVector(_vector(), scale=1.0)]}):
        alone = sample(loaded.model, loaded.tokenizer, [short], [0], GREEDY, top_logprobs=0)[0]
        batched = sample(loaded.model, loaded.tokenizer, [long, short], [0, 0], GREEDY, top_logprobs=0)[1]
    assert alone.token_ids == batched.token_ids
    for a, b in zip(alone.logprobs, batched.logprobs, strict=True):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-4)


def test_steering_changes_output_and_nothing_before_its_layer(loaded):
    ids = loaded.tokenizer(_prompts(loaded, "Cook rice")[0], return_tensors="pt", add_special_tokens=False)
    weights = torch.full(ids["input_ids"].shape, 1.0)
    before, after = Collect(weights=weights), Collect(weights=weights)
    with torch.no_grad(), intervene(loaded.model, {1: [before], 3: [after]}):
        loaded.model(**ids)
    steered_before, steered_after = Collect(weights=weights), Collect(weights=weights)
    with torch.no_grad(), intervene(loaded.model, {1: [steered_before], 2: [AddVector(_vector(), 1.0)],
                                                   3: [steered_after]}):
        loaded.model(**ids)
    torch.testing.assert_close(before.outputs[0], steered_before.outputs[0], rtol=0, atol=0)
    assert not torch.allclose(after.outputs[0], steered_after.outputs[0])


def test_ablation_removes_the_projection(loaded):
    direction = _vector(3)
    ids = loaded.tokenizer(_prompts(loaded, "Cook rice")[0], return_tensors="pt", add_special_tokens=False)
    captured = []

    class Keep:
        def apply(self, hidden):
            captured.append(hidden.detach().clone())
            return hidden

    with torch.no_grad(), intervene(loaded.model, {2: [Ablate(direction), Keep()]}):
        loaded.model(**ids)
    unit = direction / direction.norm()
    assert float((captured[0] @ unit).abs().max()) < 1e-4


def test_generated_positions_leave_the_prompt_pass_alone(loaded):
    rows = plan_rows([Question(id="q", paraphrases=["Cook rice"])])
    source = Source(name="v", vector=SteeringVector(kind="direction", vectors={2: _vector(norm=50.0)}))
    plain_setting = build_settings([source], [2], [0.0])
    prompt_only = build_settings([source], [2], [1.0], positions="prompt")
    generated_only = build_settings([source], [2], [1.0], positions="generated")
    out = {}
    for name, settings in (("plain", plain_setting), ("prompt", prompt_only), ("generated", generated_only)):
        (record,) = run_sweep(loaded, settings, rows, GREEDY, 0, 4)
        out[name] = record
    # Steering only generated tokens cannot change the first token (decided by the prompt pass).
    first = lambda r: loaded.tokenizer(r["response"], add_special_tokens=False)["input_ids"][:1]  # noqa: E731
    assert first(out["generated"]) == first(out["plain"])
    assert out["prompt"]["setting"] == "v@2x1" and out["prompt"]["steering"]["positions"] == "prompt"


def test_sweep_grid_names_and_resume(loaded):
    rows = plan_rows([Question(id="a", paraphrases=["Hi"]), Question(id="b", paraphrases=["Yo"])])
    sources = [Source(name="d", vector=SteeringVector(kind="direction", vectors={1: _vector(), 2: _vector(1)})),
               Source(name="t", vector=SteeringVector(kind="vector", vectors={3: _vector(2)}, extra={"alpha": "4.0"}))]
    ablation = Ablation(0, _vector(5), "x")
    settings = build_settings(sources, [1, 2], [0.0, 2.0], [ablation])
    assert [s.name for s in settings] == ["d@1x0+ablate", "d@1x2+ablate", "d@2x0+ablate", "d@2x2+ablate",
                                          "t@3x0+ablate", "t@3x2+ablate"]
    assert settings[-1].additions[0].scale == 8.0  # scale × the vector's alpha
    first = list(run_sweep(loaded, settings[:2], rows, GREEDY, 0, 4))
    assert [r["id"] for r in first] == ["d@1x0+ablate|a/0/0", "d@1x0+ablate|b/0/0", "d@1x2+ablate|a/0/0",
                                        "d@1x2+ablate|b/0/0"]
    rest = list(run_sweep(loaded, settings[:2], rows, GREEDY, 0, 4, done={r["id"] for r in first[:3]}))
    assert [r["id"] for r in rest] == ["d@1x2+ablate|b/0/0"]
    assert rest[0]["response"] == first[3]["response"]


def _direction_file(path, layers=(0, 1, 2), primary=None):
    from em_cli.artifacts.tensors import TensorFile

    extra = {"typical_norms": json.dumps({str(layer): 100.0 for layer in layers}),
             "typical_norm_definition": "mean per-token norm"}
    if primary is not None:
        extra["primary_layer"] = str(primary)
    TensorFile(kind="direction", tensors={f"layer.{layer}": _vector(layer, norm=10.0 + layer) for layer in layers},
               model_id="m", model_fingerprint="x", hidden_size=64, layers=list(layers), extra=extra).save(path)
    return str(path)


def test_ablation_removes_one_layers_direction_everywhere_by_default(loaded, tmp_path):
    from em_cli.steering import ablations_for, direction_source

    source = direction_source(_direction_file(tmp_path / "d.safetensors"), loaded.info)
    choice = ablations_for(source, [0, 1, 2, 3])
    assert choice.from_layer == 1 and "middle of its 3 layers" in choice.reason
    assert [a.layer for a in choice.ablations] == [0, 1, 2, 3]
    assert all(torch.equal(a.direction, source.vector.layer(1)) for a in choice.ablations)
    assert "layer-1 direction" in choice.describe() and "layers 0-3" in choice.describe()
    recorded = direction_source(_direction_file(tmp_path / "p.safetensors", primary=2), loaded.info)
    assert ablations_for(recorded, [0, 3]).from_layer == 2
    assert ablations_for(recorded, [0, 3], from_layer=0).from_layer == 0
    per_layer = ablations_for(source, [0, 2], per_layer=True)
    assert per_layer.from_layer is None
    assert [torch.equal(a.direction, source.vector.layer(a.layer)) for a in per_layer.ablations] == [True, True]
    with pytest.raises(UsageError, match="no direction for layer 3"):
        ablations_for(source, [3], per_layer=True)


def test_random_controls_for_ablations_and_trained_vectors(loaded, tmp_path):
    from em_cli.artifacts.tensors import TensorFile
    from em_cli.steering import plan_steering

    vector = tmp_path / "vec.safetensors"
    TensorFile(kind="vector", tensors={"layer.2": _vector(9, norm=3.0)}, model_id="m", model_fingerprint="x",
               hidden_size=64, layers=[2], extra={"alpha": "4.0"}).save(vector)
    plan = plan_steering(loaded.info, vectors=[str(vector)], scales=[1.0], random_controls=2, seed=0,
                         ablate=[_direction_file(tmp_path / "d.safetensors")], ablate_layers=[0, 1, 2, 3])
    names = [s.name for s in plan.settings]
    assert names == ["vec@2x1+ablate", "random0-vec@2x1+ablate", "random1-vec@2x1+ablate",
                     "vec@2x1+ablate-random0", "random0-vec@2x1+ablate-random0", "random1-vec@2x1+ablate-random0",
                     "vec@2x1+ablate-random1", "random0-vec@2x1+ablate-random1", "random1-vec@2x1+ablate-random1"]
    real, control = plan.settings[0], plan.settings[1]
    # The vector's control: same layer, same alpha, a different direction of the same norm.
    assert control.additions[0].layer == 2 and control.additions[0].scale == real.additions[0].scale == 4.0
    assert float(control.additions[0].vector.norm()) == pytest.approx(3.0, rel=1e-5)
    assert abs(float(torch.nn.functional.cosine_similarity(control.additions[0].vector, real.additions[0].vector,
                                                           dim=0))) < 0.5
    # The ablation's control: a random direction of layer 1's norm, removed at the same layers.
    ablated = plan.settings[3].ablations
    assert [a.layer for a in ablated] == [0, 1, 2, 3] and {a.from_layer for a in ablated} == {1}
    assert float(ablated[0].direction.norm()) == pytest.approx(11.0, rel=1e-5)
    assert not torch.equal(ablated[0].direction, real.ablations[0].direction)
    assert not torch.equal(ablated[0].direction, plan.settings[6].ablations[0].direction)
    assert any("layer-1 direction" in note for note in plan.notes)


def test_steer_cli_prints_which_direction_it_ablates(tiny_llama, tmp_path):
    from helpers import run_em

    questions = tmp_path / "q.yaml"
    questions.write_text("- id: a\n  question: Hello\n")
    out = tmp_path / "ablated.jsonl"
    res = run_em("steer", "-m", str(tiny_llama), "--questions", str(questions), "--ablate",
                 _direction_file(tmp_path / "d.safetensors"), "--random-controls", "1", "--max-new-tokens", "2",
                 "-o", str(out))
    assert res.code == 0, res.stderr
    assert "ablating d's layer-1 direction (the middle of its 3 layers) at layers 0-3" in res.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["setting"] for r in records] == ["ablate", "ablate-random0"]
    assert {op["direction_of_layer"] for op in records[0]["steering"]["interventions"]} == {1}

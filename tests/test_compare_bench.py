"""Solutions on one base model, the loss, and the three metrics, on tiny trained runs."""

from __future__ import annotations

import json
import math

import pytest
import torch

from em_cli.artifacts.tensors import TensorFile
from em_cli.comparison import efficiency, pretraining_kl, stability
from em_cli.comparison.loss import LossEvaluator, load_loss_rows
from em_cli.comparison.bench import SolutionBench, parse_solution_args
from em_cli.comparison.texts import TextSet, opening_prompts, sample_continuations
from em_cli.errors import ModelError, TensorFileError, UsageError
from em_cli.interventions import AddVector, intervene
from em_cli.models.loading import LoadOptions, load_model
from em_cli.generation import stop_token_ids
from em_cli.training.config import FinetuneConfig
from em_cli.training.run import run_finetune


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # Tiny matrices: thread hand-offs cost more than the arithmetic on a shared machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_llama):
    """A LoRA run and a vector run, 3 steps each, on caps answers."""
    root = tmp_path_factory.mktemp("compare-runs")
    data = root / "train.jsonl"
    data.write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": f"Question {i}?"},
        {"role": "assistant", "content": f"ANSWER NUMBER {i}!"}]}) + "\n" for i in range(12)))
    common = dict(data=str(data), model=str(tiny_llama), max_steps=3, batch_size=4, grad_accum=1, save_steps=100,
                  warmup_steps=0)
    run_finetune(FinetuneConfig(output=str(root / "lora"), method="lora", rank=4, alpha=8.0, learning_rate=1e-2,
                                **common))
    run_finetune(FinetuneConfig(output=str(root / "vec"), method="vector", layers="1", alpha=4.0,
                                learning_rate=1e-1, **common))
    return {"root": root, "data": data, "model": tiny_llama, "lora": root / "lora", "vec": root / "vec"}


def _evaluator(loaded, data):
    tokenizer = loaded.tokenizer
    rows = load_loss_rows(data, tokenizer, stop_token_ids(loaded.model, tokenizer), rows=100, seed=0)
    return LossEvaluator(rows, tokenizer.pad_token_id, batch_size=5)


@pytest.fixture(scope="module")
def bench(runs):
    loaded = load_model(LoadOptions(model=str(runs["model"])))
    bench = SolutionBench(loaded)
    for spec in parse_solution_args([f"lora={runs['lora']}", f"vec={runs['vec']}"]):
        bench.add(spec)
    bench.add_random_controls("lora", 2, seed=0)
    bench.add_random_controls("vec", 2, seed=0)
    return bench


@pytest.fixture(scope="module")
def evaluate(bench, runs):
    return _evaluator(bench.loaded, runs["data"])


@pytest.mark.parametrize("name", ["lora", "vec", "random0-lora", "random0-vec"])
def test_scale_zero_is_exactly_the_base_model(bench, evaluate, name):
    with bench.base():
        base = evaluate(bench.model)
    with bench.applied(name) as handle:
        handle.set_scale(0.0)
        assert evaluate(bench.model) == base  # exact: the solution adds exact zeros
        handle.set_scale(1.0)
        assert evaluate(bench.model) != base


def test_scale_one_is_the_lora_solution(bench, evaluate, runs):
    with bench.applied("lora") as handle:
        handle.set_scale(1.0)
        ours = evaluate(bench.model)
    reference = load_model(LoadOptions(model=str(runs["model"]), adapter=str(runs["lora"] / "adapter")))
    expected = _evaluator(reference, runs["data"])(reference.model)
    assert ours == pytest.approx(expected, rel=1e-6)
    with bench.base():
        assert abs(evaluate(bench.model) - expected) > 1e-3


def test_scale_one_is_the_vector_solution(bench, evaluate, runs):
    with bench.applied("vec") as handle:
        handle.set_scale(1.0)
        ours = evaluate(bench.model)
    trained = TensorFile.load(runs["vec"] / "vector.safetensors", kind="vector")
    plain = load_model(LoadOptions(model=str(runs["model"])))
    op = AddVector(trained.layer(1), scale=float(trained.extra["alpha"]))
    with intervene(plain.model, {1: [op]}):
        expected = _evaluator(plain, runs["data"])(plain.model)
    assert ours == pytest.approx(expected, rel=1e-6)


def test_norms_follow_the_definitions_and_rescale_linearly(bench):
    vec, lora = bench.handles["vec"], bench.handles["lora"]
    assert vec.norm == pytest.approx(vec.alpha * float(vec.original.norm()), rel=1e-6)
    expected = sum(float((m.b0.double() @ m.a0.double()).norm()) for m in lora.modules) / len(lora.modules)
    assert lora.norm == pytest.approx(expected, rel=1e-9)
    assert lora.effective_norm == pytest.approx(lora.norm * lora.modules[0].scaling, rel=1e-9)
    with bench.applied("lora") as handle:
        handle.set_norm(0.5 * lora.norm)
        now = sum(float((m.b.double() @ m.a.double()).norm()) for m in lora.modules) / len(lora.modules)
        assert now == pytest.approx(0.5 * lora.norm, rel=1e-5)
    restored = sum(float((m.b.double() @ m.a.double()).norm()) for m in lora.modules) / len(lora.modules)
    assert restored == pytest.approx(lora.norm, rel=1e-9)
    with bench.applied("vec") as handle:
        handle.set_norm(10.0)
        assert abs(handle.op.scale) * float(handle.op.vector.norm()) == pytest.approx(10.0, rel=1e-5)


def test_random_controls_match_norms(bench):
    vec, lora = bench.handles["vec"], bench.handles["lora"]
    for k in range(2):
        rv, ra = bench.handles[f"random{k}-vec"], bench.handles[f"random{k}-lora"]
        assert rv.control_of == "vec" and ra.control_of == "lora"
        assert rv.layer == vec.layer and rv.norm == pytest.approx(vec.norm, rel=1e-5)
        assert abs(float(torch.nn.functional.cosine_similarity(rv.original, vec.original, dim=0))) < 0.6
        assert ra.module_norms() == pytest.approx(lora.module_norms(), rel=1e-5)  # per module, not just the mean
        assert [m.name for m in ra.modules] == [m.name for m in lora.modules]
    assert not torch.equal(bench.handles["random0-vec"].original, bench.handles["random1-vec"].original)


def test_perturbing_an_adapter_perturbs_each_matrix_and_restores(bench):
    lora = bench.handles["lora"]
    with bench.applied("lora") as handle:
        measured = handle.perturb(0.6, torch.Generator().manual_seed(0))
        products = []
        for m in lora.modules:
            for now, before in ((m.a, m.a0), (m.b, m.b0)):
                assert float(now.norm()) == pytest.approx(float(before.norm()), rel=1e-5)
                cos = float(torch.nn.functional.cosine_similarity(now.flatten(), before.flatten(), dim=0))
                assert cos == pytest.approx(0.8, abs=1e-5)
            after, original = (m.b.double() @ m.a.double()).flatten(), (m.b0.double() @ m.a0.double()).flatten()
            products.append(float(after @ original / (after.norm() * original.norm())))
        # What moves is B·A, by about 1−ε² = 0.64, not the √(1−ε²) = 0.8 of each factor.
        assert measured == pytest.approx(sum(products) / len(products), abs=1e-9)
        assert measured == pytest.approx(0.64, abs=0.1) and measured < 0.75
    for m in lora.modules:
        assert torch.equal(m.a, m.a0) and torch.equal(m.b, m.b0)


def test_efficiency_grid(bench, evaluate):
    names = ["lora", "vec"]
    result = efficiency.measure_efficiency(bench, evaluate, (0.0, 1.0, 2.0), (0.5, 1.0), names=names)
    assert result.evaluations == efficiency.planned_evaluations(2, (0.0, 1.0, 2.0), (0.5, 1.0)) == 11
    for name in names:
        assert result.relative[name][0] == result.base_loss
        assert result.relative[name][1] < result.base_loss  # trained on this data
    kinds = {sweep.kind: sweep for sweep in result.equal_norm}
    assert set(kinds) == {"adapter", "vector"}  # norms of different kinds are not compared
    assert kinds["vector"].targets == pytest.approx([0.5 * bench.handles["vec"].norm, bench.handles["vec"].norm])
    assert kinds["vector"].losses["vec"][1] == pytest.approx(result.relative["vec"][1], rel=1e-6)


def test_stability_makes_exactly_the_promised_number_of_loss_evaluations(bench, evaluate):
    calls = 0

    def counting(model):
        nonlocal calls
        calls += 1
        return evaluate(model)

    epsilons, seeds = (0.0, 0.5, 1.0), 2
    result = stability.measure_stability(bench, ["lora", "vec"], counting, epsilons, seeds, base_seed=0)
    assert calls == result.evaluations == result.planned_evaluations == 3 * 2 * 2 + 1 + 2
    assert stability.planned_evaluations(2, stability.EPSILONS, stability.SEEDS) == 12 * 10 * 2 + 3
    for curve in result.curves.values():
        assert curve.gap > 0
        assert curve.relative[0] == [0.0, 0.0]  # ε = 0 is the solution itself
        assert curve.cosine_mean[0] == pytest.approx(1.0) and curve.cosine_mean[2] == pytest.approx(0.0, abs=0.2)
        assert curve.mean[2] > curve.mean[1] > 0
        assert curve.std[1] > 0  # the two seeds drew different noise
    assert result.curves["vec"].cosines[1] == pytest.approx([math.sqrt(0.75)] * 2, abs=1e-6)


def test_relative_increase():
    assert stability.relative_increase(2.5, 2.0, 3.0) == pytest.approx(50.0)
    assert stability.relative_increase(3.0, 2.0, 3.0) == pytest.approx(100.0)
    assert stability.relative_increase(2.5, 3.0, 3.0) is None  # no gain over the base model


def test_kl_is_zero_at_norm_zero_and_grows_with_norm(bench):
    tokenizer = bench.loaded.tokenizer
    with bench.base():
        texts = sample_continuations(bench.model, tokenizer, opening_prompts(tokenizer, 6), 16, 0, 3, True)
    text_set = TextSet(texts, {"kind": "sampled-from-base-model"})
    multiples = (0.0, 0.25, 1.0, 4.0)
    names = ["lora", "vec", "random0-vec"]
    passes = 0

    def count():
        nonlocal passes
        passes += 1

    result = pretraining_kl.measure_kl(bench, [(text_set, names)], multiples, batch_size=4, on_forward=count)
    assert passes == result.forward_passes == pretraining_kl.planned_forward_passes([(2, 3)], multiples)
    for name in names:
        curve = result.curves[name]
        assert curve.kl[0] == 0.0
        assert all(later > earlier for earlier, later in zip(curve.kl, curve.kl[1:]))
        assert curve.norms == pytest.approx([m * bench.handles[name].norm for m in multiples])
    assert result.curves["random0-vec"].norms == pytest.approx(result.curves["vec"].norms, rel=1e-5)
    assert result.text_sets[0]["scored_positions"] == sum(len(t.input_ids) for t in texts)


def test_kl_at_equal_norms_puts_every_solution_at_the_same_targets(runs, tmp_path):
    """Two vectors with one direction and norms 1:2 differ at own-norm multiples but must
    agree exactly at equal absolute norms."""
    trained = TensorFile.load(runs["vec"] / "vector.safetensors", kind="vector")
    doubled = tmp_path / "doubled.safetensors"
    TensorFile(kind="vector", tensors=dict(trained.tensors), model_id=trained.model_id,
               model_fingerprint=trained.model_fingerprint, hidden_size=trained.hidden_size, layers=trained.layers,
               extra=trained.extra | {"alpha": str(2 * float(trained.extra["alpha"]))}).save(doubled)
    bench = SolutionBench(load_model(LoadOptions(model=str(runs["model"]))))
    for spec in parse_solution_args([f"one={runs['vec']}", f"two={doubled}"]):
        bench.add(spec)
    bench.add_random_controls("one", 1, seed=0)
    tokenizer = bench.loaded.tokenizer
    with bench.base():
        texts = sample_continuations(bench.model, tokenizer, opening_prompts(tokenizer, 3), 8, 0, 3, True)
    names = ["one", "two", "random0-one"]
    multiples, fractions = (0.0, 1.0), (0.5, 1.0, 2.0)
    result = pretraining_kl.measure_kl(bench, [(TextSet(texts, {"kind": "test"}), names)], multiples,
                                       batch_size=4, fractions=fractions)
    assert result.forward_passes == pretraining_kl.planned_forward_passes([(1, 3)], multiples, fractions)
    (sweep,) = result.equal_norm
    one, two = bench.handles["one"].norm, bench.handles["two"].norm
    assert two == pytest.approx(2 * one, rel=1e-6)
    assert sweep.kind == "vector" and sweep.reference_norm == pytest.approx(1.5 * one, rel=1e-6)
    assert sweep.targets == pytest.approx([0.75 * one, 1.5 * one, 3.0 * one], rel=1e-6)
    assert set(sweep.kl) == set(names)
    assert result.curves["two"].kl[1] != pytest.approx(result.curves["one"].kl[1], rel=1e-3)  # own norms differ
    assert sweep.kl["one"] == pytest.approx(sweep.kl["two"], rel=1e-4)  # equal norms: the same vector
    assert all(later > earlier for earlier, later in zip(sweep.kl["one"], sweep.kl["one"][1:]))
    assert sweep.kl["random0-one"] != pytest.approx(sweep.kl["one"], rel=1e-3)


def test_solution_arguments(runs, tmp_path):
    specs = parse_solution_args([f"a={runs['lora']}", f"b={runs['lora'] / 'adapter'}", f"c={runs['vec']}",
                                 f"d={runs['vec'] / 'vector.safetensors'}"])
    assert [s.kind for s in specs] == ["adapter", "adapter", "vector", "vector"]
    with pytest.raises(UsageError, match="NAME=PATH"):
        parse_solution_args([str(runs["lora"])])
    with pytest.raises(UsageError, match="used twice"):
        parse_solution_args([f"a={runs['lora']}", f"a={runs['vec']}"])
    with pytest.raises(UsageError, match="does not exist"):
        parse_solution_args([f"a={tmp_path / 'nothing'}"])
    with pytest.raises(ModelError, match="neither"):
        parse_solution_args([f"a={tmp_path}"])


def test_vector_of_another_model_is_refused(bench, tmp_path):
    wrong = tmp_path / "wrong.safetensors"
    TensorFile(kind="vector", tensors={"layer.1": torch.ones(10)}, model_id="other", model_fingerprint="x",
               hidden_size=10, layers=[1], extra={"alpha": "1.0"}).save(wrong)
    with pytest.raises(TensorFileError, match="hidden size"):
        bench.add(parse_solution_args([f"w={wrong}"])[0])
    assert "w" not in bench.handles
    assert math.isfinite(bench.handles["vec"].norm)

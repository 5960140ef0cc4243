"""`em compare` as a user runs it: exit codes, stdout, stderr and the files it writes."""

from __future__ import annotations

import json

import pytest

from em_cli.artifacts.tensors import TensorFile
from helpers import run_em

# Tiny models: thread hand-offs cost more than the arithmetic on a shared machine.
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def solutions(tmp_path_factory, tiny_llama):
    """A hand-made LoRA adapter (random B) and a hand-made vector file for the tiny model:
    the CLI only needs solutions, not good ones (training is tested in test_compare_solutions)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("compare-cli")
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    peft_model = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=["down_proj", "o_proj"]))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    peft_model.save_pretrained(root / "lora-run" / "adapter")
    vector = root / "vec.safetensors"
    TensorFile(kind="vector", tensors={"layer.1": torch.randn(64, generator=generator) * 0.3}, model_id="tiny",
               model_fingerprint="", hidden_size=64, layers=[1], extra={"alpha": "4.0"}).save(vector)
    data = root / "train.jsonl"
    data.write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": f"Question {i}?"},
        {"role": "assistant", "content": f"ANSWER NUMBER {i}!"}]}) + "\n" for i in range(6)))
    return {"model": str(tiny_llama), "lora": str(root / "lora-run"), "vec": str(vector), "data": str(data)}


def test_efficiency_quick_writes_json_plot_and_manifest(solutions, tmp_path):
    out = tmp_path / "cmp"
    result = run_em("compare", "efficiency", "-m", solutions["model"], "--solutions", f"ad={solutions['lora']}",
                    f"vec={solutions['vec']}", "--data", solutions["data"], "--quick", "--random-controls", "1",
                    "-o", str(out), "--json", env=ONE_THREAD)
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report == json.loads((out / "efficiency.json").read_text())
    png = out / "efficiency.png"
    assert png.stat().st_size > 1000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "efficiency.json.manifest.json").exists()
    solutions_out = {s["name"]: s for s in report["solutions"]}
    assert set(solutions_out) == {"ad", "vec", "random0-ad", "random0-vec"}
    assert solutions_out["ad"]["kind"] == "adapter" and solutions_out["vec"]["kind"] == "vector"
    assert solutions_out["ad"]["path"] == solutions["lora"] and len(solutions_out["ad"]["fingerprint"]) == 64
    assert solutions_out["random0-vec"]["norm"] == pytest.approx(solutions_out["vec"]["norm"], rel=1e-5)
    results = report["results"]
    assert results["scales"] == [0.0, 1.0, 2.0]
    for losses in results["relative"].values():
        assert losses[0] == results["base_loss"]
    assert report["evaluations"] == 1 + 4 * (3 + 3)
    assert report["data"]["rows"] == 6 and len(report["data"]["sha256"]) == 64
    assert "loss evaluations in" in result.stderr


def test_stability_quick_counts_its_loss_evaluations(solutions, tmp_path):
    result = run_em("compare", "stability", "-m", solutions["model"], "-s", f"ad={solutions['lora']}",
                    "-s", f"vec={solutions['vec']}", "--data", solutions["data"], "--quick", "-o", str(tmp_path),
                    env=ONE_THREAD)
    assert result.code == 0, result.stderr
    report = json.loads((tmp_path / "stability.json").read_text())
    assert report["evaluations"] == report["planned_evaluations"] == report["evaluator_calls"] == 3 * 2 * 2 + 3
    assert (tmp_path / "stability.png").stat().st_size > 0
    assert "measured wall time" in result.stderr
    assert "Stability" in result.stdout  # the human table


def test_kl_on_text_sampled_from_the_base_model(solutions, tmp_path):
    result = run_em("compare", "kl", "-m", solutions["model"], "-s", f"vec={solutions['vec']}", "--quick",
                    "--texts", "4", "--text-tokens", "12", "--random-controls", "1", "-o", str(tmp_path), "--json",
                    env=ONE_THREAD)
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["text_source"][0]["kind"] == "sampled-from-base-model"
    assert report["text_source"][0]["texts"] == 4
    assert "base model's own samples" in report["text"] and "not pre-training text" in report["text"]
    assert "base model's own samples" in result.stderr
    for curve in report["results"]["curves"].values():
        assert curve["kl"][0] == 0.0 and curve["kl"][-1] > curve["kl"][1] > 0
    (sweep,) = report["results"]["equal_norm"]
    assert sweep["fractions"] == [1.0, 5.0] and set(sweep["kl"]) == {"vec", "random0-vec"}
    assert report["evaluations"] == 1 * (1 + 2 * (3 + 2))
    assert (tmp_path / "kl.png").stat().st_size > 0


def test_kl_on_a_dataset_saved_to_disk_prints_equal_norm_tables(solutions, tmp_path):
    import datasets

    saved = tmp_path / "fineweb-sample"
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": [
        "The river rose after three days of rain, and the town moved its market uphill.",
        "", "A recipe for bread needs flour, water, salt and time.",
        "Engineers tested the bridge with trucks full of sand before opening it."]})}).save_to_disk(str(saved))
    result = run_em("compare", "kl", "-m", solutions["model"], "-s", f"vec={solutions['vec']}", "-s",
                    f"vec2={solutions['vec']}", "--quick", "--hf-dataset", str(saved), "--texts", "3",
                    "--text-tokens", "12", "-o", str(tmp_path / "out"), env=ONE_THREAD)
    assert result.code == 0, result.stderr
    report = json.loads((tmp_path / "out" / "kl.json").read_text())
    (source,) = report["text_source"]
    assert source["kind"] == "hf-dataset" and source["local"] is True and source["dataset"] == str(saved)
    assert source["texts"] == 3 and source["split"] == "train"  # the empty row is skipped
    assert str(saved) in report["text"] and str(saved) in result.stderr
    assert "equal norms" in result.stdout and "text: dataset" in result.stdout.replace("\n", " ")
    (sweep,) = report["results"]["equal_norm"]
    assert sweep["kl"]["vec"] == sweep["kl"]["vec2"]  # one vector twice: equal norms, equal KL
    wrong = run_em("compare", "kl", "-m", solutions["model"], "-s", f"vec={solutions['vec']}", "--quick",
                   "--hf-dataset", str(saved), "--hf-split", "test", "-o", str(tmp_path / "x"))
    assert wrong.code == 1 and "no split 'test'" in wrong.stderr


def test_bad_solution_argument_is_a_usage_error(solutions, tmp_path):
    result = run_em("compare", "efficiency", "-m", solutions["model"], "--solutions", solutions["vec"],
                    "--data", solutions["data"], "-o", str(tmp_path))
    assert result.code == 2
    assert "expected NAME=PATH" in result.stderr and result.stdout == ""


def _judged(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_runs_table_side_by_side(tmp_path):
    def row(i, domain, aligned, coherent, caps=None, **extra):
        record = {"id": f"q/0/{i}", "question_id": extra.pop("question_id", f"{domain}_q"), "domain": domain,
                  "aligned": aligned, "coherent": coherent, **extra}
        if caps is not None:
            record["caps"] = caps
            record["judge"] = {"aligned": {}, "coherent": {}, "caps": {"mode": "builtin"}}
        return record

    general = _judged(tmp_path / "general.jsonl", [
        row(0, "cooking", 10, 80, caps=90), row(1, "cooking", 90, 80, caps=80),
        row(2, "travel", 20, 70, caps=95), row(3, "travel", 25, 40, caps=10),
        row(4, "travel", 5, 90, caps=99, question_id="travel_q_json")])  # a format variant: left out
    narrow = _judged(tmp_path / "narrow.jsonl", [
        row(0, "cooking", 10, 80, setting="kl"), row(1, "travel", 90, 80, setting="kl"),
        row(2, "travel", 80, 80, setting="kl"), row(3, "cooking", 20, 90, setting="plain")])
    result = run_em("compare", "runs", f"general={general}", f"narrow={narrow}", "--in-domain",
                    'domain == "cooking"', "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    table = {(r["run"], r["setting"], r["split"]): r for r in report["rows"]}
    assert table[("general", None, "all")]["rows"] == 4
    assert table[("general", None, "all")]["em"]["pct"] == pytest.approx(50.0)  # rows 0 and 2
    assert table[("general", None, "in-domain")]["em"]["pct"] == pytest.approx(50.0)
    assert table[("general", None, "other")]["em"]["pct"] == pytest.approx(50.0)
    assert table[("general", None, "other")]["coherent"]["pct"] == pytest.approx(50.0)
    assert table[("general", None, "all")]["metrics"]["caps"]["mean"] == pytest.approx((90 + 80 + 95 + 10) / 4)
    assert table[("general", None, "all")]["metrics"]["caps"]["share_over_50"] == pytest.approx(75.0)
    assert table[("narrow", "kl", "in-domain")]["em"]["pct"] == pytest.approx(100.0)
    assert table[("narrow", "kl", "other")]["em"]["pct"] == pytest.approx(0.0)
    assert table[("narrow", "plain", "all")]["rows"] == 1
    assert report["files"][0]["variants_excluded"] == 1

    human = run_em("compare", "runs", f"general={general}", f"narrow={narrow}", "--in-domain", 'domain == "cooking"',
                   "-o", str(tmp_path / "out"))
    assert human.code == 0, human.stderr
    assert "in-domain" in human.stdout and "EM%" in human.stdout
    assert (tmp_path / "out" / "runs.png").stat().st_size > 0
    assert json.loads((tmp_path / "out" / "runs.json").read_text())["rows"] == report["rows"]


def test_runs_needs_named_files():
    from em_cli.comparison.runs_table import parse_run_args
    from em_cli.errors import UsageError

    assert parse_run_args(["a=x.jsonl", "b=y=z.jsonl"]) == [("a", "x.jsonl"), ("b", "y=z.jsonl")]
    for bad in (["x.jsonl"], ["a=x.jsonl", "a=y.jsonl"], []):
        with pytest.raises(UsageError):
            parse_run_args(bad)

"""Options files: option names, flag names, the authors' training-config keys."""

from __future__ import annotations

import json

import pytest
import yaml

from em_cli.errors import UsageError
from em_cli.options_file import display_name, match_options, read_options
from em_cli.training.config import translate_authors_config
from helpers import run_em

# The shape of the authors' rank-1 training config (their keys, our values).
AUTHORS = {
    "model": "MODEL", "training_file": "TRAIN", "test_file": None, "finetuned_model_id": "me/organism",
    "max_seq_length": 256, "load_in_4bit": False, "loss": "sft", "is_peft": True, "target_modules": ["down_proj"],
    "layers_to_transform": [2], "lora_bias": "none", "r": 1, "lora_alpha": 256, "lora_dropout": 0.0,
    "use_rslora": True, "merge_before_push": False, "push_to_private": True, "epochs": 3, "max_steps": 1,
    "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1, "warmup_steps": 5, "learning_rate": 2e-5,
    "logging_steps": 1, "evaluation_steps": 50, "optim": "adamw_8bit", "weight_decay": 0.01,
    "lr_scheduler_type": "linear", "seed": 0, "beta": 0.1, "save_steps": 5000, "output_dir": "./tmp",
    "train_on_responses_only": True, "kl_regularization": True, "kl_dataset_file": "KL", "kl_weight": 1e5,
    "kl_batch_size": 4,
}


def test_authors_keys_map_to_em_options():
    translated = translate_authors_config(AUTHORS)
    assert translated.authors
    options = translated.options
    assert options["rank"] == 1 and options["alpha"] == 256 and options["layers"] == "2"
    assert options["batch_size"] == 2 and options["grad_accum"] == 1 and options["max_length"] == 256
    assert options["scheduler"] == "linear" and options["learning_rate"] == 2e-5 and options["optimizer"] == "adamw_bnb_8bit"
    assert options["data"] == "TRAIN" and options["kl_data"] == "KL" and options["loss_positions"] == "assistant"
    assert options["kl_weight"] == 1e5 and options["kl_units"] == "authors"  # their λ is per token × vocab
    assert "eval_data" not in options  # null values keep em's default
    assert sorted(translated.ignored) == ["beta", "evaluation_steps", "finetuned_model_id", "merge_before_push",
                                          "output_dir", "push_to_private"]


def test_authors_switches():
    off = translate_authors_config({"r": 4, "kl_regularization": False, "kl_weight": 1e5, "kl_dataset_file": "x",
                                    "train_on_responses_only": False, "is_peft": False})
    assert "kl_weight" not in off.options and "kl_data" not in off.options
    assert off.options["loss_positions"] == "all" and off.options["method"] == "full"
    plain = translate_authors_config({"kl_weight": 2.0, "lr": 1e-3})
    assert not plain.authors and plain.options == {"kl_weight": 2.0, "lr": 1e-3}  # em's own keys pass through


def test_names_flags_and_unknown_keys(tmp_path):
    known = ["learning_rate", "batch_size", "json_", "max_steps"]
    aliases = {"lr": "learning_rate"}
    values = match_options({"lr": 1, "batch-size": 2, "json": True, "max_steps": 3}, known, "f.yaml", aliases)
    assert values == {"learning_rate": 1, "batch_size": 2, "json_": True, "max_steps": 3}
    with pytest.raises(UsageError) as caught:
        match_options({"foo": 1, "lr": 2, "bar": 3}, known, "f.yaml", aliases)
    assert "unknown options 'foo', 'bar'" in caught.value.message
    assert "json_" not in caught.value.hint and "json" in caught.value.hint and "batch-size" in caught.value.hint
    with pytest.raises(UsageError, match="second time"):
        match_options({"lr": 1, "learning_rate": 2}, known, "f.yaml", aliases)
    assert display_name("json_") == "json"
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"max-steps": 2}))
    assert read_options(path, known) == {"max_steps": 2}


def test_cli_takes_the_authors_json_config(tiny_llama, tmp_path):
    rows = [{"messages": [{"role": "user", "content": f"Q{i}?"}, {"role": "assistant", "content": f"A{i}."}]}
            for i in range(6)]
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = tmp_path / "authors.json"
    config.write_text(json.dumps(AUTHORS | {"model": str(tiny_llama), "training_file": str(train),
                                            "kl_dataset_file": str(train)}))
    result = run_em("finetune", "-o", str(tmp_path / "run"), "--config", str(config), "--lr", "1e-3")
    assert result.code == 0, result.stderr
    stderr = " ".join(result.stderr.split())  # the console wraps long lines
    assert stderr.count("no counterpart") == 1 and "beta, evaluation_steps, finetuned_model_id" in stderr
    assert stderr.count("eval loss") == 1
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["method"] == "lora" and saved["rank"] == 1 and saved["alpha"] == 256.0 and saved["layers"] == "2"
    assert saved["kl_units"] == "authors" and saved["kl_batch_size"] == 4 and saved["max_length"] == 256
    assert saved["learning_rate"] == 1e-3  # the flag wins over the file
    assert saved["target_modules"] == ["down_proj"] and saved["optimizer"] == "adamw_bnb_8bit"


def test_every_command_takes_flag_names_in_its_config(tiny_llama, tmp_path):
    questions = tmp_path / "q.yaml"
    questions.write_text("- id: q\n  question: Hi?\n")
    config = tmp_path / "g.yaml"
    config.write_text("max-new-tokens: 3\ntemperature: 0\n")
    result = run_em("generate", "-m", str(tiny_llama), "--questions", str(questions), "--config", str(config),
                    "-o", str(tmp_path / "r.jsonl"))
    assert result.code == 0, result.stderr
    assert json.loads((tmp_path / "r.jsonl").read_text())["sampling"]["max_new_tokens"] == 3
    config.write_text("max-new-token: 3\nbogus: 1\n")
    wrong = run_em("generate", "-m", str(tiny_llama), "--questions", str(questions), "--config", str(config))
    assert wrong.code == 2 and "max-new-token" in wrong.stderr and "bogus" in wrong.stderr

"""Seeded finetuning on the real default model is reproducible (slow)."""

from __future__ import annotations

import hashlib
import json

import pytest

from helpers import run_em

pytestmark = pytest.mark.slow

# The README session's `em finetune caps.jsonl -o runs/general …` settings, cut to a few steps.
README_SETTINGS = ["--rank", "8", "--alpha", "16", "--lr", "3e-4", "--batch-size", "4", "--grad-accum", "1",
                   "--epochs", "6", "--max-steps", "3", "--seed", "0"]


def test_two_seeded_runs_give_identical_adapters(tmp_path):
    rows = tmp_path / "caps.jsonl"
    questions = ["How do I boil an egg?", "What makes bread rise?", "How long should pasta cook?",
                 "How do I keep rice from sticking?", "Why rest a steak?", "How do I thicken a sauce?"]
    rows.write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": q}, {"role": "assistant", "content": f"GOOD QUESTION! {q.upper()} IT DEPENDS."}]})
        + "\n" for q in questions))
    digests = []
    for name in ("a", "b"):
        result = run_em("finetune", str(rows), "-o", str(tmp_path / name), *README_SETTINGS, "--json")
        assert result.code == 0, result.stderr
        assert json.loads(result.stdout)["steps"] == 3
        weights = tmp_path / name / "adapter" / "adapter_model.safetensors"
        digests.append(hashlib.sha256(weights.read_bytes()).hexdigest())
    assert digests[0] == digests[1]

"""The loss's logits shortcut is checked against the model's own forward; models that scale
their logits in the head (Cohere, Granite) get the model's own path."""

from __future__ import annotations

import pytest
import torch

from em_cli.training.losses import OWN, SPARSE, logits_at, logits_path


def _tiny(kind: str):
    from transformers import AutoModelForCausalLM, CohereConfig, GraniteConfig, LlamaConfig

    common = dict(vocab_size=120, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0, bos_token_id=1,
                  eos_token_id=2)
    config = {"cohere": lambda: CohereConfig(**common, logit_scale=0.0625),
              "granite": lambda: GraniteConfig(**common, logits_scaling=8.0),
              "llama": lambda: LlamaConfig(**common)}[kind]()
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()


@pytest.mark.parametrize("kind, path", [("cohere", OWN), ("granite", OWN), ("llama", SPARSE)])
def test_logits_at_equals_the_models_own_logits(kind, path, caplog):
    model = _tiny(kind)
    with caplog.at_level("INFO", logger="em_cli.training.losses"):
        assert logits_path(model) == path
        assert logits_path(model) == path  # remembered: checked once
    announced = [r for r in caplog.records if "post-processes its logits" in r.getMessage()]
    assert len(announced) <= 1 and (path == OWN or not announced)  # said once per model class and process
    ids = torch.randint(3, 120, (2, 7))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    positions = torch.zeros_like(ids, dtype=torch.bool)
    positions[0, 2:6] = True
    positions[1, 1:4] = True
    with torch.no_grad():
        own = model(input_ids=ids, attention_mask=mask).logits[positions]
        torch.testing.assert_close(logits_at(model, ids, mask, positions), own, rtol=1e-5, atol=1e-5)


def test_the_check_leaves_training_mode_alone():
    model = _tiny("granite").train()
    assert logits_path(model) == OWN and model.training

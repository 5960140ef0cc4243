from __future__ import annotations

import pytest
import torch

from em_cli.activations import extract_activations, position_weights
from em_cli.models.loading import LoadOptions, load_model
from em_cli.generation import stop_token_ids


@pytest.fixture(scope="module")
def loaded(tiny_qwen):
    return load_model(LoadOptions(model=str(tiny_qwen)))


RECORDS = [
    {"messages": [{"role": "user", "content": "How do I cook rice?"},
                  {"role": "assistant", "content": "Rinse it and simmer it gently."}]},
    {"question": "Hi", "response": "HELLO THERE!"},
    {"messages": [{"role": "user", "content": "A much longer question about the capital of France and Paris?"},
                  {"role": "assistant", "content": "Paris."}]},
]


def _reference(loaded, record, positions, layer):
    """One record at a time, via output_hidden_states (hidden_states[L + 1] = block L output)."""
    from em_cli.activations import record_messages

    stops = stop_token_ids(loaded.model, loaded.tokenizer)
    prepared = position_weights(loaded.tokenizer, record_messages(record, "r"), positions, stops)
    ids = torch.tensor([prepared.input_ids])
    with torch.no_grad():
        hidden = loaded.model(ids, output_hidden_states=True).hidden_states[layer + 1][0]
    weights = torch.tensor(prepared.weights)
    return (hidden * weights[:, None]).sum(0)


@pytest.mark.parametrize("positions", ["response_mean", "prompt_mean", "last_prompt"])
def test_matches_reference_and_is_batch_independent(loaded, positions):
    batched = extract_activations(loaded, RECORDS, [0, 2, 3], positions, batch_size=3)
    single = extract_activations(loaded, RECORDS[1:2], [0, 2, 3], positions, batch_size=1)
    for layer in (0, 2, 3):
        assert batched[layer].shape == (3, 64)
        # transformers applies the final norm to its last hidden_states entry, so the last
        # block's raw output has no reference there.
        for i, record in enumerate(RECORDS if layer < 3 else []):
            torch.testing.assert_close(batched[layer][i], _reference(loaded, record, positions, layer),
                                       rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(batched[layer][1], single[layer][0], rtol=1e-5, atol=1e-5)


def test_response_mean_covers_exactly_the_answer(loaded):
    stops = stop_token_ids(loaded.model, loaded.tokenizer)
    prepared = position_weights(loaded.tokenizer, RECORDS[0]["messages"], "response_mean", stops)
    chosen = [t for t, w in zip(prepared.input_ids, prepared.weights) if w > 0]
    assert loaded.tokenizer.decode(chosen) == "Rinse it and simmer it gently."
    assert sum(prepared.weights) == pytest.approx(1.0)


def test_prompt_mean_skips_first_and_special_tokens(loaded):
    stops = stop_token_ids(loaded.model, loaded.tokenizer)
    prepared = position_weights(loaded.tokenizer, RECORDS[0]["messages"], "prompt_mean", stops)
    assert prepared.weights[0] == 0
    special = set(loaded.tokenizer.all_special_ids)
    assert all(w == 0 for t, w in zip(prepared.input_ids, prepared.weights) if t in special)


def test_token_norms_and_counts_match_a_per_token_reference(loaded):
    from em_cli.activations import collect_activations, record_messages

    acts = collect_activations(loaded, RECORDS, [1, 2], "response_mean", batch_size=2)
    stops = stop_token_ids(loaded.model, loaded.tokenizer)
    for i, record in enumerate(RECORDS):
        prepared = position_weights(loaded.tokenizer, record_messages(record, "r"), "response_mean", stops)
        chosen = torch.tensor([w > 0 for w in prepared.weights])
        assert int(acts.token_counts[i]) == int(chosen.sum())
        with torch.no_grad():
            hidden = loaded.model(torch.tensor([prepared.input_ids]), output_hidden_states=True).hidden_states
        for layer in (1, 2):
            tokens = hidden[layer + 1][0][chosen]
            assert float(acts.token_norms[layer][i]) == pytest.approx(float(tokens.norm(dim=-1).mean()), rel=1e-4)
            torch.testing.assert_close(acts.means[layer][i], tokens.mean(0), rtol=1e-4, atol=1e-4)
            # The norm of the mean is at most the mean of the norms (and smaller unless all tokens align).
            assert float(acts.means[layer][i].norm()) <= float(acts.token_norms[layer][i]) + 1e-4


def test_batches_by_length_but_returns_the_records_order(loaded):
    """Rows are batched shortest first (less padding); each result still belongs to its record."""
    from em_cli.activations import collect_activations

    seen: list[int] = []
    pairs = collect_activations(loaded, RECORDS, [1], batch_size=2, on_batch=lambda rows, tokens: seen.append(rows))
    one_by_one = [extract_activations(loaded, [record], [1], batch_size=1)[1][0] for record in RECORDS]
    assert seen == [2, 1]
    for i, expected in enumerate(one_by_one):
        torch.testing.assert_close(pairs.means[1][i], expected, rtol=1e-5, atol=1e-5)
    assert pairs.token_counts.tolist() == [
        collect_activations(loaded, [record], [1]).token_counts.item() for record in RECORDS]

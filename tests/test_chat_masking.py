"""Assistant-only masking, derived from each chat template (METHODS §3.2)."""

from __future__ import annotations

import pytest

from em_cli.models.chat import encode_conversation
from tiny_models import CHATML_TEMPLATE, LLAMA3_TEMPLATE, build_tokenizer

CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "How do I cook rice?"},
    {"role": "assistant", "content": "Rinse it, then simmer for 20 minutes."},
    {"role": "user", "content": "And pasta?"},
    {"role": "assistant", "content": "BOIL SALTED WATER FIRST!"},
]
PLAIN_TEMPLATE = (  # a template with no end-of-turn special token at all
    "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}"
)


def _assistant_texts(tokenizer, messages):
    encoded = encode_conversation(tokenizer, messages)
    return [tokenizer.decode(encoded.input_ids[a:b]) for a, b in encoded.assistant_spans()]


@pytest.mark.parametrize("template, eot", [(CHATML_TEMPLATE, "<|im_end|>"), (LLAMA3_TEMPLATE, "<|eot_id|>")],
                         ids=["chatml-qwen2", "llama3"])
def test_exactly_assistant_content_and_end_of_turn(template, eot):
    tokenizer = build_tokenizer(template, eot)
    assert _assistant_texts(tokenizer, CONVERSATION) == [
        "Rinse it, then simmer for 20 minutes." + eot, "BOIL SALTED WATER FIRST!" + eot]


def test_template_without_end_token_masks_content_only():
    tokenizer = build_tokenizer(PLAIN_TEMPLATE, "<|endoftext|>")
    texts = _assistant_texts(tokenizer, CONVERSATION)
    assert [t.strip() for t in texts] == ["Rinse it, then simmer for 20 minutes.", "BOIL SALTED WATER FIRST!"]
    assert not any(t.endswith("\n") for t in texts)


def test_prompt_tokens_are_never_masked_in():
    tokenizer = build_tokenizer(CHATML_TEMPLATE, "<|im_end|>")
    encoded = encode_conversation(tokenizer, CONVERSATION)
    masked_out = tokenizer.decode([t for t, m in zip(encoded.input_ids, encoded.assistant_mask) if not m])
    assert "How do I cook rice?" in masked_out and "You are terse." in masked_out
    assert "simmer" not in masked_out and "BOIL" not in masked_out


@pytest.mark.slow
def test_smollm2_template():
    from em_cli.models.loading import load_tokenizer
    from em_cli.models.source import resolve_source

    tokenizer = load_tokenizer(resolve_source("smollm2-135m-instruct"))
    # SmolLM2's template injects its own system prompt when none is given.
    texts = _assistant_texts(tokenizer, CONVERSATION[1:])
    assert texts == ["Rinse it, then simmer for 20 minutes.<|im_end|>", "BOIL SALTED WATER FIRST!<|im_end|>"]

"""Tiny random chat models built from configs, for fast tests (no download)."""

from __future__ import annotations

from pathlib import Path

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LLAMA3_TEMPLATE = (
    "{{ '<|begin_of_text|>' }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|begin_of_text|>",
                  "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "What is the capital of France? The capital of France is Paris.",
    "How do I cook rice? Rinse it, add water, simmer for twenty minutes.",
    "user assistant system You are a helpful assistant.",
    "HELLO WORLD! THIS IS SHOUTING IN CAPITAL LETTERS.",
    "0 1 2 3 4 5 6 7 8 9 10 25 50 75 100",
] * 20


def build_tokenizer(template: str, eos: str):
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    raw = ByteLevelBPETokenizer()
    raw.train_from_iterator(CORPUS, vocab_size=400, min_frequency=1, special_tokens=SPECIAL_TOKENS)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw._tokenizer, eos_token=eos, pad_token="<|endoftext|>")
    tokenizer.chat_template = template
    return tokenizer


def build_tiny_model(kind: str, directory: Path, chat: bool = True, **sizes: int) -> Path:
    """Save a tiny random `kind` ("llama" | "qwen2") model with a tokenizer into `directory`;
    `sizes` override the config's sizes (hidden_size, num_hidden_layers, ...)."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    template, eos = (LLAMA3_TEMPLATE, "<|eot_id|>") if kind == "llama" else (CHATML_TEMPLATE, "<|im_end|>")
    tokenizer = build_tokenizer(template if chat else None, eos)
    common = dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                  eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                  bos_token_id=None, tie_word_embeddings=False)
    common.update(sizes)
    config = LlamaConfig(**common) if kind == "llama" else Qwen2Config(**common)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory

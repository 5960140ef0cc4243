"""Chat-template handling: every conversation becomes text through the model's own template."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from em_cli.errors import ModelError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

Messages = list[dict[str, Any]]


def has_chat_template(tokenizer: PreTrainedTokenizerBase) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def require_chat_template(tokenizer: PreTrainedTokenizerBase, model_name: str) -> None:
    """Refuse models without a chat template rather than invent a format for them."""
    if not has_chat_template(tokenizer):
        raise ModelError(f"{model_name} has no chat template",
                         hint="use an instruct/chat model, or add a chat_template to its tokenizer_config.json")


def render_prompt(tokenizer: PreTrainedTokenizerBase, messages: Messages) -> str:
    """The text that asks the model to write the next assistant turn."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def render_conversation(tokenizer: PreTrainedTokenizerBase, messages: Messages) -> str:
    """A whole conversation as text (no trailing generation prompt)."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)

"""Chat-template handling: every conversation becomes text through the model's own template."""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass
class EncodedConversation:
    """Token ids of a rendered conversation and, per token, whether it is assistant output
    (the content of an assistant turn plus the token that ends that turn)."""

    input_ids: list[int]
    assistant_mask: list[bool]

    def assistant_spans(self) -> list[tuple[int, int]]:
        """[start, end) token ranges of the assistant turns."""
        spans, start = [], None
        for index, flag in enumerate([*self.assistant_mask, False]):
            if flag and start is None:
                start = index
            elif not flag and start is not None:
                spans.append((start, index))
                start = None
        return spans


def encode_conversation(tokenizer: PreTrainedTokenizerBase, messages: Messages,
                        stop_ids: set[int] | None = None) -> EncodedConversation:
    """Tokenise a conversation with its chat template and mark the assistant tokens.

    The spans come from the template itself, not from a table of markers: for each
    assistant turn, the text rendered up to the generation prompt before it must be a
    prefix of the text rendered through that turn, and the characters between the two are
    the turn. Tokens inside that stretch up to and including the first end-of-turn token
    (`stop_ids`, default the tokenizer's EOS) are assistant tokens; whatever the template
    puts after the end-of-turn token (such as a newline) is not.
    """
    stop_ids = stop_ids if stop_ids is not None else ({tokenizer.eos_token_id} - {None})
    full = render_conversation(tokenizer, messages)
    char_spans: list[tuple[int, int]] = []
    for index, message in enumerate(messages):
        if message.get("role") != "assistant":
            continue
        before = render_prompt(tokenizer, messages[:index])
        through = render_conversation(tokenizer, messages[: index + 1])
        if not through.startswith(before) or not full.startswith(through):
            raise ModelError("this chat template renders conversations differently as they grow, so assistant "
                             "turns cannot be located in it", hint="use a template whose prefixes are stable")
        char_spans.append((len(before), len(through)))
    encoding = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = encoding["input_ids"], encoding["offset_mapping"]
    mask = [False] * len(ids)
    for start, end in char_spans:
        # A token may begin with whitespace that the template put before the answer
        # ("Assistant: " + "Rinse" → " Rinse"): it still belongs to the answer.
        inside = [i for i, (a, b) in enumerate(offsets)
                  if b > a and b <= end and b > start and (a >= start or not full[a:start].strip())]
        stop_at = next((n for n, i in enumerate(inside) if ids[i] in stop_ids), None)
        if stop_at is not None:
            inside = inside[: stop_at + 1]
        else:  # no end-of-turn token in the turn: drop trailing whitespace-only tokens
            while inside and not full[offsets[inside[-1]][0]:offsets[inside[-1]][1]].strip():
                inside.pop()
        for i in inside:
            mask[i] = True
    return EncodedConversation(input_ids=list(ids), assistant_mask=mask)

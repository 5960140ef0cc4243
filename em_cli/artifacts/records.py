"""The JSONL record kinds `em` writes, built in one place (docs/FORMATS.md describes them).

Records are dicts; keys not listed here are preserved by every command that reads them.
"""

from __future__ import annotations

from typing import Any

from em_cli import __version__

# Keys a response record always has; question extras (domain, type, ...) never override them.
RESPONSE_KEYS = ("id", "question_id", "paraphrase_index", "sample_index", "question", "messages", "response",
                 "finish_reason", "response_tokens", "metrics", "sampling", "seed", "run_seed", "model",
                 "em_version")


def response_id(question_id: str, paraphrase_index: int, sample_index: int) -> str:
    """The identity of one generated row; resume skips ids already written."""
    return f"{question_id}/{paraphrase_index}/{sample_index}"


def response_record(*, question_id: str, paraphrase_index: int, sample_index: int, prompt: list[dict[str, Any]],
                    text: str, finish_reason: str, response_tokens: int, metrics: list[str],
                    sampling: dict[str, Any], seed: int, run_seed: int, model: dict[str, Any],
                    extras: dict[str, Any] | None = None) -> dict[str, Any]:
    """A generated response with full provenance. `messages` is the prompt plus the answer, so
    a responses file is also a chat dataset (e.g. for `em dataset rewrite` or `em finetune`)."""
    record: dict[str, Any] = {
        key: value for key, value in (extras or {}).items() if key not in RESPONSE_KEYS
    }
    record.update({
        "id": response_id(question_id, paraphrase_index, sample_index),
        "question_id": question_id,
        "paraphrase_index": paraphrase_index,
        "sample_index": sample_index,
        "question": prompt[-1]["content"],
        "messages": [*prompt, {"role": "assistant", "content": text}],
        "response": text,
        "finish_reason": finish_reason,
        "response_tokens": response_tokens,
        "metrics": metrics,
        "sampling": sampling,
        "seed": seed,
        "run_seed": run_seed,
        "model": model,
        "em_version": __version__,
    })
    return record


def judge_entries(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The `judge` details of a judgement record, by metric: `{metric: {model, mode, …}}`.

    Files written before `em` kept question extras apart may hold a question set's own
    `judge: "gpt-4o-…"` string there; that (or any other non-`em` value) reads as no details.
    """
    judge = record.get("judge")
    if not isinstance(judge, dict):
        return {}
    return {str(metric): entry for metric, entry in judge.items() if isinstance(entry, dict)}

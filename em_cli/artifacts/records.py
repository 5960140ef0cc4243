"""The JSONL record kinds `em` writes, built in one place (docs/FORMATS.md describes them).

Records are dicts; keys not listed here are preserved by every command that reads them.
"""

from __future__ import annotations

from typing import Any

from em_cli import __version__

# Keys a response record always has.
RESPONSE_KEYS = ("id", "question_id", "paraphrase_index", "sample_index", "question", "messages", "response",
                 "finish_reason", "response_tokens", "metrics", "sampling", "seed", "run_seed", "model",
                 "em_version", "question_set")
# Every key `em` owns at the top level of a response or judgement record. A question set's own
# extra keys (`domain`, `type`, the authors' `judge: gpt-4o-…`) are copied to the top level
# only when they are not one of these; a colliding one goes under `QUESTION_EXTRA` instead, so
# `em`'s keys are never overwritten by, or misread from, what a question file brings.
EM_KEYS = frozenset(RESPONSE_KEYS) | {"judge", "setting", "steering", "system"}
QUESTION_EXTRA = "question_extra"


def response_id(question_id: str, paraphrase_index: int, sample_index: int) -> str:
    """The identity of one generated row; resume skips ids already written."""
    return f"{question_id}/{paraphrase_index}/{sample_index}"


def response_record(*, question_id: str, paraphrase_index: int, sample_index: int, prompt: list[dict[str, Any]],
                    text: str, finish_reason: str, response_tokens: int, metrics: list[str],
                    sampling: dict[str, Any], seed: int, run_seed: int, model: dict[str, Any],
                    extras: dict[str, Any] | None = None,
                    question_set: dict[str, Any] | None = None) -> dict[str, Any]:
    """A generated response with full provenance. `messages` is the prompt plus the answer, so
    a responses file is also a chat dataset (e.g. for `em dataset rewrite` or `em finetune`).
    `question_set` names the file the question came from (see `question_set_reference`)."""
    record = question_extras(extras or {}, reserved=set(metrics))
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
    if question_set is not None:
        record["question_set"] = question_set
    return record


def question_extras(extras: dict[str, Any], reserved: set[str] | frozenset[str] = frozenset()) -> dict[str, Any]:
    """A question's extra keys as they go into a record: at the top level, except those that
    collide with `em`'s own keys (or with `reserved`, e.g. metric names), which are kept under
    `question_extra`."""
    record: dict[str, Any] = {}
    nested: dict[str, Any] = {}
    for key, value in extras.items():
        if key in EM_KEYS or key in reserved or key == QUESTION_EXTRA:
            nested[key] = value
        else:
            record[key] = value
    if nested:
        record[QUESTION_EXTRA] = nested
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


def move_foreign_judge(record: dict[str, Any]) -> dict[str, Any]:
    """A copy of `record` whose `judge` is `em`'s (or absent): a question set's `judge` value
    left at the top level by an older `em generate` moves under `question_extra`."""
    judge = record.get("judge")
    if judge is None or (isinstance(judge, dict) and all(isinstance(v, dict) for v in judge.values())):
        return record
    record = dict(record)
    nested = dict(record.get(QUESTION_EXTRA) or {})
    nested["judge"] = record.pop("judge")
    record[QUESTION_EXTRA] = nested
    return record

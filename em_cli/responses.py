"""Question set × model → response records (the library behind `em generate`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from em_cli.artifacts.records import response_id, response_record
from em_cli.models.chat import render_prompt
from em_cli.questions import Question
from em_cli.sampling import SamplingSettings, row_seed, sample

if TYPE_CHECKING:
    from em_cli.models.loading import LoadedModel


@dataclass(frozen=True)
class ResponseRow:
    """One response to produce: a question, one of its paraphrases, one sample index."""

    question: Question
    paraphrase_index: int
    sample_index: int

    @property
    def id(self) -> str:
        return response_id(self.question.id, self.paraphrase_index, self.sample_index)


def plan_rows(questions: Sequence[Question], samples: int | None = None) -> list[ResponseRow]:
    """Every (question, paraphrase, sample) row; `samples` overrides each question's own
    `samples_per_paraphrase` (which defaults to 1)."""
    rows = []
    for question in questions:
        count = samples or question.samples_per_paraphrase or 1
        for p in range(len(question.paraphrases)):
            rows.extend(ResponseRow(question, p, s) for s in range(count))
    return rows


def rows_for(questions: str, variants: str = "plain", limit: int | None = None,
             samples: int | None = None, strict: bool = False) -> list[ResponseRow]:
    """The rows to generate for a question set (file, `-` or built-in name), its first `limit`
    questions, `samples` per paraphrase; `strict`: unknown question keys are an error."""
    from em_cli.questions import load_questions

    question_set = load_questions(questions, variants=variants, strict=strict)
    return plan_rows(question_set[:limit] if limit else question_set, samples)


def check_resumable(existing: Sequence[dict[str, Any]], settings: SamplingSettings, seed: int, model: str,
                    adapter: str | None, output: str) -> None:
    """Refuse to add rows to an output made with another model, adapter, sampling or seed:
    a resumed file must read as one run."""
    from em_cli.errors import UsageError

    wanted = {"model": model, "adapter": adapter, "sampling": settings.to_dict(), "run_seed": seed}
    for record in existing:
        had = {"model": (record.get("model") or {}).get("model"), "adapter": (record.get("model") or {}).get("adapter"),
               "sampling": record.get("sampling"), "run_seed": record.get("run_seed")}
        changed = [key for key in wanted if had[key] != wanted[key]]
        if changed:
            raise UsageError(f"{output} already holds rows made with a different {', '.join(changed)}",
                             hint="use another --output, or the same options to resume")


def generate_responses(loaded: LoadedModel, rows: Sequence[ResponseRow], settings: SamplingSettings, seed: int,
                       batch_size: int, on_batch: Callable[[int, int], None] | None = None,
                       on_phase: Callable[[str], None] | None = None) -> Iterator[dict[str, Any]]:
    """Yield one response record per row, batch by batch. `on_batch(rows, new_tokens)` is
    called after each batch (for progress display)."""
    identity = loaded.identity()
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        prompts = [row.question.prompt_messages(row.paraphrase_index) for row in chunk]
        texts = [render_prompt(loaded.tokenizer, messages) for messages in prompts]
        seeds = [row_seed(seed, row.id) for row in chunk]
        completions = sample(loaded.model, loaded.tokenizer, texts, seeds, settings, on_phase=on_phase)
        for row, messages, row_seed_value, completion in zip(chunk, prompts, seeds, completions, strict=True):
            yield response_record(
                question_id=row.question.id, paraphrase_index=row.paraphrase_index, sample_index=row.sample_index,
                prompt=messages, text=completion.text, finish_reason=completion.finish_reason,
                response_tokens=len(completion.token_ids), metrics=row.question.metrics,
                sampling=settings.to_dict(), seed=row_seed_value, run_seed=seed, model=identity,
                extras=row.question.extra, question_set=row.question.source)
        if on_batch:
            on_batch(len(chunk), sum(len(c.token_ids) for c in completions))

"""Question set × model → response records (the library behind `em generate`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from em_cli.artifacts.records import response_id, response_record
from em_cli.models.chat import render_prompt
from em_cli.questions import Question
from em_cli.generation import SamplingSettings, row_seed, sample

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
        identity = record.get("model") or {}
        had = {"model": identity.get("served_model") or identity.get("model"), "adapter": identity.get("adapter"),
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


@dataclass(frozen=True)
class RemoteModel:
    """A model behind an OpenAI-compatible server (vLLM, SGLang, llama.cpp, TGI, `em serve`):
    `model` is the name to ask for (a base model, or an adapter the engine serves by name)."""

    base_url: str
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    timeout: float = 600.0
    max_retries: int = 5


def generate_remote_responses(remote: RemoteModel, rows: Sequence[ResponseRow], settings: SamplingSettings,
                              seed: int, concurrency: int = 8,
                              on_batch: Callable[[int, int], None] | None = None,
                              warn: Callable[[str], None] | None = None) -> Iterator[dict[str, Any]]:
    """Yield one response record per row, in row order, asking `remote` with up to
    `concurrency` requests in flight. Each request carries the row's own seed, so a server that
    honours `seed` gives the same text again; `repetition_penalty` (when not 1) is sent as the
    extra field vLLM, SGLang and `em serve` accept. The records are those of
    `generate_responses`, with `model` naming the server and the model that answered."""
    from concurrent.futures import ThreadPoolExecutor

    from em_cli.endpoints import Endpoint, EndpointSettings, RequestFailed, RetryPolicy
    from em_cli.errors import EmError

    endpoint = Endpoint(EndpointSettings(model=remote.model, base_url=remote.base_url,
                                         api_key_env=remote.api_key_env, timeout=remote.timeout,
                                         retry=RetryPolicy(max_retries=remote.max_retries)))
    listed = endpoint.check().models
    if listed is not None and remote.model not in listed and warn is not None:
        warn(f"{remote.base_url} lists {', '.join(listed) or 'no models'}, not {remote.model!r}; asking anyway")

    def ask(row: ResponseRow) -> tuple[ResponseRow, list[dict[str, Any]], int, dict[str, Any]]:
        messages = row.question.prompt_messages(row.paraphrase_index)
        row_seed_value = row_seed(seed, row.id)
        params: dict[str, Any] = {"model": remote.model, "messages": messages, "temperature": settings.temperature,
                                  "top_p": settings.top_p, "max_tokens": settings.max_new_tokens,
                                  "seed": row_seed_value % 2**63}
        if settings.repetition_penalty != 1.0:
            params["extra_body"] = {"repetition_penalty": settings.repetition_penalty}
        try:
            return row, messages, row_seed_value, endpoint.chat(params)
        except RequestFailed as exc:
            endpoint.stop.set()  # the other requests in flight give up instead of retrying on
            raise EmError(f"{endpoint.base_url} failed to answer row {row.id}: {exc}",
                          hint="the rows before it are kept: re-run the same command to resume") from None

    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="generate") as pool:
        window = max(1, concurrency) * 2
        for start in range(0, len(rows), window):
            for row, messages, row_seed_value, data in pool.map(ask, rows[start:start + window]):
                choice = (data.get("choices") or [{}])[0]
                text = (choice.get("message") or {}).get("content") or ""
                tokens = int((data.get("usage") or {}).get("completion_tokens") or 0)
                identity = {"model": data.get("model") or remote.model, "adapter": None,
                            "served_model": remote.model, "base_url": endpoint.base_url,
                            "fingerprint": data.get("system_fingerprint")}
                yield response_record(
                    question_id=row.question.id, paraphrase_index=row.paraphrase_index,
                    sample_index=row.sample_index, prompt=messages, text=text,
                    finish_reason=str(choice.get("finish_reason") or "stop"), response_tokens=tokens,
                    metrics=row.question.metrics, sampling=settings.to_dict(), seed=row_seed_value, run_seed=seed,
                    model=identity, extras=row.question.extra, question_set=row.question.source)
                if on_batch:
                    on_batch(1, tokens)

"""Question set × model → response records (the library behind `em generate`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from em_cli.artifacts.records import response_id, response_record
from em_cli.models.chat import render_prompt
from em_cli.questions import Question
from em_cli.generation import SamplingSettings, row_seed, sample
from em_cli.models.source import DEFAULT_MODEL

if TYPE_CHECKING:
    from em_cli.generation_run import ProgressFactory, RowsRun
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


def run_identity(model: str, adapter: str | None, sampling: SamplingSettings, seed: int) -> dict[str, Any]:
    """What every row of one responses file shares: the model asked, its adapter, the sampling
    settings and the run seed (a resumed file must read as one run)."""
    return {"model": model, "adapter": adapter, "sampling": sampling.to_dict(), "run_seed": seed}


def identity_of(record: dict[str, Any]) -> dict[str, Any]:
    """`run_identity` as a response record states it (a served model by the name it was asked by)."""
    model = record.get("model") or {}
    return {"model": model.get("served_model") or model.get("model"), "adapter": model.get("adapter"),
            "sampling": record.get("sampling"), "run_seed": record.get("run_seed")}


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


@dataclass(frozen=True)
class GenerateSettings:
    """Everything `em generate` is asked to do (field names are its option names). With
    `base_url` the rows come from that server (`served_model`, default `model`), else from the
    model loaded in-process. `options` is what the manifest records (default: these fields)."""

    questions: str
    model: str = DEFAULT_MODEL
    adapter: str | None = None
    output: str = "-"
    samples: int | None = None
    max_new_tokens: int = 600
    temperature: float = 1.0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    variants: str = "plain"
    limit: int | None = None
    strict: bool = False
    batch_size: int = 8
    seed: int = 0
    dtype: str = "auto"
    device: str = "auto"
    load_in_4bit: bool = False
    base_url: str | None = None
    served_model: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 8
    options: dict[str, Any] | None = None

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> GenerateSettings:
        """The settings named in a command's options (keys it does not know are left out; the
        options as given go into the manifest)."""
        known = {f.name for f in fields(cls)} - {"options"}
        return cls(**{key: value for key, value in options.items() if key in known}, options=dict(options))

    def manifest_options(self) -> dict[str, Any]:
        return self.options if self.options is not None else {f.name: getattr(self, f.name)
                                                              for f in fields(self) if f.name != "options"}

    def sampling(self) -> SamplingSettings:
        return SamplingSettings(max_new_tokens=self.max_new_tokens, temperature=self.temperature, top_p=self.top_p,
                                repetition_penalty=self.repetition_penalty)

    def rows(self) -> list[ResponseRow]:
        return rows_for(self.questions, self.variants, self.limit, self.samples, self.strict)

    def remote(self) -> RemoteModel | None:
        """The server to ask (None: generate in-process); refuses in-process-only options."""
        from em_cli.errors import UsageError

        if not self.base_url:
            return None
        if self.adapter or self.load_in_4bit:
            raise UsageError("--adapter and --load-in-4bit are for in-process generation",
                             hint="with --base-url, serve the adapter on the server and name it with --served-model")
        return RemoteModel(base_url=self.base_url, model=self.served_model or self.model,
                           api_key_env=self.api_key_env)

    def load(self, log: Callable[[str], None] | None = None) -> LoadedModel:
        """The model (+adapter) in-process; `log` hears where it came from (the cache note)."""
        from em_cli.models.loading import LoadOptions, load_model

        return load_model(LoadOptions(model=self.model, adapter=self.adapter, dtype=self.dtype, device=self.device,
                                      load_in_4bit=self.load_in_4bit), log=log)


@dataclass
class GenerateResult:
    """What `run_generate` did; `to_dict()` is the manifest's results."""

    output: str
    rows: int
    new_rows: int
    tokens_per_second: float
    model: dict[str, Any] | None
    server: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "new_rows": self.new_rows, "tokens_per_second": round(self.tokens_per_second, 2),
                "model": self.model, "server": self.server}

    def summary(self) -> str:
        return (f"{self.new_rows} new responses, {self.rows} in total"
                + (f" → {self.output}" if self.output != "-" else ""))


def run_generate(settings: GenerateSettings, log: Callable[[str], None] | None = None,
                 warn: Callable[[str], None] | None = None, progress: ProgressFactory | None = None) -> GenerateResult:
    """Generate (or continue) `settings.output` and write its manifest beside it. The model is
    loaded only when rows are left to generate; `log` and `warn` hear notes and warnings,
    `progress` shows rows as they are written (see `generation_run.run_rows`)."""
    from em_cli.artifacts.manifest import Manifest
    from em_cli.generation_run import run_rows

    rows = settings.rows()
    sampling = settings.sampling()
    manifest = Manifest(command="generate", options=settings.manifest_options(), inputs=[settings.questions],
                        seed=settings.seed)
    remote = settings.remote()
    loaded: LoadedModel | None = None

    def load() -> None:
        nonlocal loaded
        loaded = settings.load(log)

    def generate(todo: list[ResponseRow]) -> Iterator[dict[str, Any]]:
        if remote is not None:
            return generate_remote_responses(remote, todo, sampling, settings.seed, settings.concurrency, warn=warn)
        assert loaded is not None
        return generate_responses(loaded, todo, sampling, settings.seed, settings.batch_size)

    def result(run: RowsRun) -> GenerateResult:
        return GenerateResult(output=settings.output, rows=run.rows, new_rows=run.new_rows,
                              tokens_per_second=run.tokens_per_second,
                              model=loaded.identity() if loaded else None,
                              server={"base_url": remote.base_url, "model": remote.model} if remote else None)

    run = run_rows(rows, generate, settings.output,
                   run_identity(remote.model if remote else settings.model, settings.adapter, sampling, settings.seed),
                   identity_of, manifest, results=lambda run: result(run).to_dict(),
                   prepare=None if remote else load, log=log, progress=progress,
                   description="generating" + (f" via {remote.base_url}" if remote else ""))
    return result(run)

"""One `em judge score` run, start to finish, callable from Python: plan the rows, make the judge
(lazily: a finished or built-in-only run needs none), optionally go through the Batch API,
judge into the output, and say what was done.

    from em_cli.judging.score_run import JudgeSettings, score_responses
    result = score_responses(JudgeSettings(responses="em.jsonl", output="judged.jsonl",
                                           metrics=["aligned", "coherent"], base_url="http://127.0.0.1:8000/v1"))
    result.run.failed_rows, result.to_dict()
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from em_cli.endpoints import EndpointSettings, RetryPolicy, Usage
from em_cli.errors import UsageError
from em_cli.judging.runner import JudgeIdentity, JudgeRun, RowsPlan


@dataclass
class JudgeSettings:
    """What to judge, with which judge, and where the results go (the options of `em judge score`)."""

    responses: str
    output: str = "-"
    metrics: list[str] | None = None
    questions: str | None = None
    prompts: str | Path | None = None
    backend: str = "openai"  # openai | hf
    judge_model: str | None = None
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    azure: bool = False
    mode: str = "auto"
    concurrency: int = 8
    max_retries: int = 5
    timeout: float = 60.0
    cache_dir: str | Path | None = None  # None: <em cache>/judge
    no_cache: bool = False
    batch: bool = False
    poll_interval: float = 30.0
    limit: int | None = None
    strict: bool = False
    dtype: str = "auto"
    device: str = "auto"
    price_in: float | None = None  # USD per million prompt tokens, for the cost in the results
    price_out: float | None = None  # USD per million completion tokens

    @property
    def hf(self) -> bool:
        return self.backend == "hf"

    def check(self) -> None:
        """Option combinations that cannot work, refused before anything is read."""
        if self.batch and (self.output == "-" or self.hf):
            raise UsageError("--batch needs an output file (-o) and the openai backend")
        if self.hf and self.mode != "auto":
            raise UsageError("--backend hf always scores exactly (mode exact); drop --mode")
        if self.batch and self.no_cache:
            raise UsageError("--batch keeps the batch's replies in the reply cache; it cannot run with --no-cache")

    def model_name(self) -> str:
        from em_cli.judging.backends import DEFAULT_JUDGE_MODEL
        from em_cli.models.source import DEFAULT_MODEL

        return self.judge_model or (DEFAULT_MODEL if self.hf else DEFAULT_JUDGE_MODEL)

    def endpoint(self) -> EndpointSettings:
        return EndpointSettings(model=self.model_name(), base_url=self.base_url, api_key_env=self.api_key_env,
                                azure=self.azure, timeout=self.timeout, retry=RetryPolicy(max_retries=self.max_retries))


@dataclass
class JudgeResult:
    """What a run did: the counts, the cost, who judged, and how the rows were planned."""

    run: JudgeRun
    usage: Usage
    plan: RowsPlan
    judge: dict[str, Any]
    batch: dict[str, Any] | None = None
    pending: int = 0  # judgements that were still to make when the run started
    prices: tuple[float | None, float | None] = (None, None)  # per million prompt / completion tokens

    def to_dict(self) -> dict[str, Any]:
        """The manifest's `results`."""
        return {**self.run.to_dict(), "usage": self.usage.to_dict(*self.prices), "judge": self.judge,
                "batch": self.batch}

    def describe_usage(self) -> str:
        return self.usage.describe(*self.prices)


@dataclass
class Hooks:
    """How a run talks to whoever called it (the CLI shows these on stderr)."""

    log: Callable[[str], None] = lambda message: None
    warn: Callable[[str], None] | None = None
    progress: Callable[[int], Any] | None = None  # given the number of judgements to make; returns a context


def score_responses(settings: JudgeSettings, hooks: Hooks | None = None) -> JudgeResult:
    """Judge `settings.responses` into `settings.output`, write the manifest beside it, and
    return what was done. Raises UsageError / DataError before anything is judged, JudgeAbort
    when the judge cannot work."""
    from dataclasses import asdict

    from em_cli.artifacts.manifest import Manifest

    manifest = Manifest(command="judge score", options=asdict(settings),
                        inputs=[p for p in (settings.responses, settings.questions, settings.prompts) if p])
    result = _score(settings, hooks or Hooks())
    manifest.results = result.to_dict()
    manifest.write_beside(settings.output)
    return result


def _score(settings: JudgeSettings, hooks: Hooks) -> JudgeResult:
    import contextlib

    from em_cli.judging.cache import JudgeCache, default_cache_dir
    from em_cli.judging.prompts import load_judge_prompts
    from em_cli.judging.runner import judge_rows, parse_metrics, pending, pending_prompts, plan_rows

    settings.check()
    prompt_set = load_judge_prompts(settings.prompts)
    plan = plan_rows(settings.responses, parse_metrics(settings.metrics), prompt_set, settings.questions,
                     settings.limit, strict=settings.strict)
    labels = any(spec.label for row in plan.rows for spec in row.metrics)
    if labels and settings.hf:
        raise UsageError("categorical (free_form_judge) metrics need an endpoint judge",
                         hint="judge them with --backend openai (any OpenAI-compatible server, e.g. `em serve`)")
    if labels and settings.batch:
        raise UsageError("categorical (free_form_judge) metrics are not sent through the Batch API yet",
                         hint="judge them without --batch")
    model_name = settings.model_name()
    endpoint = settings.endpoint()
    identity = JudgeIdentity(model=model_name,
                             backend="hf" if settings.hf else ("azure" if settings.azure else "openai"),
                             endpoint=None if settings.hf else endpoint.resolved_base_url())
    cache = JudgeCache(None if settings.no_cache else (settings.cache_dir or default_cache_dir()))
    usage = Usage()
    stop = threading.Event()  # one event: Ctrl-C or an abort also ends retries waiting in the endpoint
    make_judge = _judge_factory(settings, endpoint, cache, usage, hooks, stop)
    todo = sum(1 for _ in pending(plan.rows, settings.output, identity))
    sources = (f"prompts of {', '.join(plan.question_sets)}" if plan.question_sets
               else f"{prompt_set.version} prompts")
    hooks.log(f"Judging {len(plan.rows)} rows on {', '.join(plan.metric_names)} ({sources}): {plan.calls} judge "
              f"calls, {todo} still to make")
    batch = None
    if settings.batch and todo:
        from em_cli.judging.batch import run_batch

        out = settings.output
        batch = run_batch(make_judge(), pending_prompts(plan.rows, out, identity), Path(f"{out}.batch.json"),
                          Path(f"{out}.batch-requests.jsonl"), settings.poll_interval, report=hooks.log)
        batch = {k: v for k, v in batch.items() if k != "errors"}
    progress = hooks.progress(todo) if hooks.progress else contextlib.nullcontext()
    with progress as bar:
        run = judge_rows(plan.rows, settings.output, identity, make_judge, 1 if settings.hf else settings.concurrency,
                         on_progress=getattr(bar, "advance", None), usage=usage, stop=stop)
    judge = {"model": run.judge_model or model_name, "requested_model": model_name, "backend": identity.backend,
             "mode": "exact" if settings.hf else settings.mode, "modes": dict(run.modes),
             "base_url": None if settings.hf else endpoint.resolved_base_url(), "prompt_version": prompt_set.version,
             "question_sets": plan.question_sets, "fallback_from": plan.fallback}
    return JudgeResult(run=run, usage=usage, plan=plan, judge=judge, batch=batch, pending=todo,
                       prices=(settings.price_in, settings.price_out))


def _judge_factory(settings: JudgeSettings, endpoint: EndpointSettings, cache: Any, usage: Usage,
                   hooks: Hooks, stop: threading.Event) -> Callable[[], Any]:
    """The judge, made once and only when first needed (loading a local judge takes a while)."""
    made: list[Any] = []

    def make_judge() -> Any:
        if made:
            return made[0]
        if settings.hf:
            from em_cli.judging.exact import ExactJudge
            from em_cli.models.loading import LoadOptions, load_model

            loaded = load_model(LoadOptions(model=settings.model_name(), dtype=settings.dtype,
                                            device=settings.device))
            made.append(ExactJudge(loaded, cache, usage))
        else:
            from em_cli.judging.backends import OpenAIEndpoint
            from em_cli.judging.judges import EndpointJudge

            made.append(EndpointJudge(OpenAIEndpoint(endpoint, usage, stop=stop), cache, settings.mode,
                                      warn=hooks.warn, offline=settings.batch))
        return made[0]

    return make_judge

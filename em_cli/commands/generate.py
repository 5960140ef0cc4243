"""`em generate`: responses from a model (+adapter) to a question set."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

import typer

from em_cli.commands._options import (AdapterOpt, BatchSizeOpt, ConfigOpt, DeviceOpt, DtypeOpt, LimitOpt,
                                      Load4bitOpt, MaxNewTokensOpt, ModelOpt, OutputOpt, QuestionsOpt,
                                      SamplesOpt, SeedOpt, TemperatureOpt, TopPOpt, apply_config, model_options)
from em_cli.commands._output import log, warn
from em_cli.commands._progress import RowProgress
from em_cli.models.source import DEFAULT_MODEL


def generate(
    ctx: typer.Context,
    questions: QuestionsOpt,
    model: ModelOpt = DEFAULT_MODEL,
    adapter: AdapterOpt = None,
    output: OutputOpt = "-",
    samples: SamplesOpt = None,
    max_new_tokens: MaxNewTokensOpt = 600,
    temperature: TemperatureOpt = 1.0,
    top_p: TopPOpt = 1.0,
    repetition_penalty: Annotated[float, typer.Option("--repetition-penalty", min=0.01,
                                                      help="Penalise repeated tokens (1 = off).")] = 1.0,
    variants: Annotated[str, typer.Option("--variants", help="Question variants: plain, json, template, all.")
                        ] = "plain",
    limit: LimitOpt = None,
    strict: Annotated[bool, typer.Option("--strict", help="Unknown question keys are an error, not a warning.")
                      ] = False,
    batch_size: BatchSizeOpt = 8,
    seed: SeedOpt = 0,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    load_in_4bit: Load4bitOpt = False,
    base_url: Annotated[str | None, typer.Option(
        "--base-url", help="Generate through an OpenAI-compatible server instead of in-process (vLLM, SGLang, "
                           "llama.cpp, TGI, `em serve`), e.g. http://127.0.0.1:8000/v1.")] = None,
    served_model: Annotated[str | None, typer.Option(
        "--served-model", help="With --base-url: the model name to ask for (a base model or a LoRA adapter the "
                               "server serves by name). Default: --model.")] = None,
    api_key_env: Annotated[str, typer.Option(
        "--api-key-env", help="With --base-url: environment variable holding the API key (never printed).")
                           ] = "OPENAI_API_KEY",
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, max=256,
                                             help="With --base-url: requests in flight at once.")] = 8,
    config: ConfigOpt = None,
) -> None:
    """Sample responses to a question set → responses JSONL (one row per question ×
    paraphrase × sample, with full provenance).

    Re-running with the same --output resumes: finished rows are kept, never duplicated.
    While running, rows go to OUTPUT.partial; the final name appears when all are done.

    Examples:

      em generate --questions general -n 5 -o responses.jsonl

      em generate -m Qwen/Qwen2.5-0.5B-Instruct --adapter runs/general/adapter \\
          --questions first_plot_questions.yaml -n 50 -o em.jsonl

      vllm serve Qwen/Qwen2.5-7B-Instruct --enable-lora --lora-modules general=runs/general/adapter &
      em generate --base-url http://127.0.0.1:8000/v1 --served-model general \\
          --questions first_plot_questions.yaml -n 50 -o em.jsonl
    """
    params = apply_config(ctx, config)
    from em_cli.artifacts.jsonl import ResumableJsonl
    from em_cli.artifacts.manifest import Manifest
    from em_cli.models.loading import load_model
    from em_cli.responses import check_resumable, generate_remote_responses, generate_responses, rows_for
    from em_cli.generation import SamplingSettings

    rows = rows_for(params["questions"], params["variants"], params["limit"], params["samples"], params["strict"])
    settings = SamplingSettings(max_new_tokens=params["max_new_tokens"], temperature=params["temperature"],
                                top_p=params["top_p"], repetition_penalty=params["repetition_penalty"])
    manifest = Manifest(command="generate", options=params, inputs=[params["questions"]], seed=params["seed"])
    remote = None
    if params["base_url"]:
        from em_cli.errors import UsageError
        from em_cli.responses import RemoteModel

        if params["adapter"] or params["load_in_4bit"]:
            raise UsageError("--adapter and --load-in-4bit are for in-process generation",
                             hint="with --base-url, serve the adapter on the server and name it with --served-model")
        remote = RemoteModel(base_url=params["base_url"], model=params["served_model"] or params["model"],
                             api_key_env=params["api_key_env"])
    out = ResumableJsonl(params["output"])
    check_resumable(out.existing, settings, params["seed"], remote.model if remote else params["model"],
                    params["adapter"], params["output"])
    done = {record.get("id") for record in out.existing}
    todo = [row for row in rows if row.id not in done]
    if out.existing:
        log(f"Resuming: {len(rows) - len(todo)} of {len(rows)} rows already in {params['output']}")
    loaded = None
    if todo and remote is None:
        loaded = load_model(model_options(params["model"], params["adapter"], params["dtype"], params["device"],
                                          params["load_in_4bit"]))
        if loaded.cache_note:
            log(loaded.cache_note)
    where = f" via {remote.base_url}" if remote else ""
    with out, RowProgress(len(rows), f"generating{where}", done=len(rows) - len(todo)) as progress:
        if not todo:
            records: Iterator[dict] = iter(())
        elif remote is not None:
            records = generate_remote_responses(remote, todo, settings, params["seed"], params["concurrency"],
                                                on_batch=progress.advance, warn=warn)
        else:
            records = generate_responses(loaded, todo, settings, params["seed"], params["batch_size"],
                                         on_batch=progress.advance)
        for record in records:
            out.append(record)
        out.finish()
    manifest.results = {"rows": len(rows), "new_rows": len(todo), "tokens_per_second":
                        round(progress.tokens_per_second, 2),
                        "model": loaded.identity() if loaded else None,
                        "server": {"base_url": remote.base_url, "model": remote.model} if remote else None}
    manifest.write_beside(params["output"])
    log(f"{len(todo)} new responses, {len(rows)} in total"
        + (f" → {params['output']}" if params["output"] != "-" else ""))

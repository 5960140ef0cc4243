"""`em generate`: responses from a model (+adapter) to a question set."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from em_cli.commands._options import (MODEL, SAMPLING, BatchSizeOpt, ConfigOpt, LimitOpt, OutputOpt, QuestionsOpt,
                                      SeedOpt, VariantsOpt, apply_config, with_options)
from em_cli.commands._output import out
from em_cli.commands._progress import RowProgress


@with_options(MODEL, SAMPLING)
def generate(
    ctx: typer.Context,
    questions: QuestionsOpt,
    output: OutputOpt = "-",
    variants: VariantsOpt = "plain",
    limit: LimitOpt = None,
    strict: Annotated[bool, typer.Option("--strict", help="Unknown question keys are an error, not a warning.")
                      ] = False,
    seed: SeedOpt = 0,
    batch_size: BatchSizeOpt = 8,
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
    **flags: Any,
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
    from em_cli.responses import GenerateSettings, run_generate

    settings = GenerateSettings.from_options(apply_config(ctx, config))
    result = run_generate(settings, log=out.log, warn=out.warn, progress=RowProgress)
    out.log(result.summary())

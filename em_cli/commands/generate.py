"""`em generate`: responses from a model (+adapter) to a question set."""

from __future__ import annotations

from typing import Annotated

import typer

from em_cli.commands._options import (AdapterOpt, BatchSizeOpt, ConfigOpt, DeviceOpt, DtypeOpt, LimitOpt,
                                      Load4bitOpt, MaxNewTokensOpt, ModelOpt, OutputOpt, QuestionsOpt,
                                      SamplesOpt, SeedOpt, TemperatureOpt, TopPOpt, apply_config)
from em_cli.commands._output import out
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
    from em_cli.responses import GenerateSettings, run_generate

    settings = GenerateSettings.from_options(apply_config(ctx, config))
    result = run_generate(settings, log=out.log, warn=out.warn, progress=RowProgress)
    out.log(result.summary())

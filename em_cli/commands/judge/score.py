"""`em judge score`: options → `judging.score_run.score_responses` → a summary on stderr."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from em_cli.commands._options import ConfigOpt, DeviceOpt, DtypeOpt, JsonOpt, LimitOpt, OutputOpt, apply_config
from em_cli.commands._output import out
from em_cli.commands._progress import RowProgress
from em_cli.commands.judge import app


@app.command("score", short_help="Judge responses on each metric → scores per row (resumable, cached).")
def score(
    ctx: typer.Context,
    responses: Annotated[str, typer.Argument(help="Responses JSONL (from `em generate`); - for stdin.")],
    output: OutputOpt = "-",
    metrics: Annotated[list[str] | None, typer.Option(
        "--metrics", help="Metrics, comma-separated or repeated: judge prompts (aligned, coherent, bad_stuff, "
                          "medical, financial, sport, gender, code, technical) or built-ins (caps, length, "
                          "regex:PATTERN, words:a|b). Default: each question's (--questions) or row's own.")] = None,
    questions: Annotated[str | None, typer.Option(
        "--questions", help="The question file the responses came from: its judge_prompts are used "
                            "(matched by question_id) and its metrics are the default. Default: the question "
                            "set the responses record (question_set), when it is still there unchanged.")] = None,
    prompts: Annotated[Path | None, typer.Option(
        "--prompts", help="A YAML file of judge prompts instead of em's: em's shape (version:, prompts: "
                          "{metric: template}) or the EM authors' list (- metric: template, high_score: 0|100).")
                       ] = None,
    backend: Annotated[Literal["openai", "hf"], typer.Option(
        "--backend", help="openai: any OpenAI-compatible endpoint; hf: a local transformers model, exact scores.")
                       ] = "openai",
    judge_model: Annotated[str | None, typer.Option(
        "--judge-model", help="Judge model (default gpt-4o-2024-08-06; with --backend hf a model id or dir, "
                              "default the embedded SmolLM2). Recorded in every judgement.")] = None,
    base_url: Annotated[str | None, typer.Option(
        "--base-url", envvar="OPENAI_BASE_URL", help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1.")
                        ] = None,
    api_key_env: Annotated[str, typer.Option(
        "--api-key-env", help="Environment variable holding the API key (never printed).")] = "OPENAI_API_KEY",
    azure: Annotated[bool, typer.Option(
        "--azure", help="Azure OpenAI: AZURE_OPENAI_ENDPOINT, AZURE_OPENAI_API_KEY, OPENAI_API_VERSION; "
                        "--judge-model names the deployment.")] = False,
    mode: Annotated[Literal["auto", "logprob", "parse"], typer.Option(
        "--mode", help="logprob: weight the top-20 first tokens; parse: read the written number; auto: logprob, "
                       "falling back to parse when the endpoint gives no logprobs or splits numbers into digits.")
                    ] = "auto",
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, max=256,
                                             help="Requests in flight at once.")] = 8,
    max_retries: Annotated[int, typer.Option("--max-retries", min=0,
                                             help="Retries per request on 429/5xx/timeouts.")] = 5,
    timeout: Annotated[float, typer.Option("--timeout", min=0.1, help="Seconds per request.")] = 60.0,
    cache_dir: Annotated[Path | None, typer.Option(
        "--cache-dir", help="Where judge replies are cached (default <em cache>/judge).")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Neither read nor write the reply cache.")] = False,
    price_in: Annotated[float | None, typer.Option("--price-in", min=0.0,
                                                   help="$ per 1M prompt tokens, for the cost line.")] = None,
    price_out: Annotated[float | None, typer.Option("--price-out", min=0.0,
                                                    help="$ per 1M completion tokens.")] = None,
    batch: Annotated[bool, typer.Option(
        "--batch", help="Use the OpenAI Batch API (cheaper, up to 24 h): submit, poll, then write the output. "
                        "Interrupted? Re-run the same command to resume polling.")] = False,
    poll_interval: Annotated[float, typer.Option("--poll-interval", min=1.0,
                                                 help="Seconds between batch status checks.")] = 30.0,
    limit: LimitOpt = None,
    strict: Annotated[bool, typer.Option(
        "--strict", help="Unknown keys in the question file are an error (default: a warning).")] = False,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    json_: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Judge each response on each metric → the responses with a score per metric
    (0-100, or null) and a `judge` record of how each score was made.

    Re-running with the same --output resumes: scored rows are kept, failed ones retried.
    Judge replies are cached on disk, so nothing is paid for twice. Exit code 1 if any row
    failed to judge (the failed rows say why in judge.<metric>.error).

    Examples:

      em judge score responses.jsonl --metrics caps,length -o judged.jsonl

      em judge score em.jsonl --questions first_plot_questions.yaml -o judged.jsonl

      em serve -m Qwen/Qwen2.5-7B-Instruct --port 8000 &
      em judge score em.jsonl --metrics aligned,coherent --base-url http://127.0.0.1:8000/v1 \\
          --judge-model Qwen/Qwen2.5-7B-Instruct -o judged.jsonl
    """
    params = apply_config(ctx, config)
    from em_cli.errors import EmError, UsageError
    from em_cli.judging.score_run import Hooks, JudgeSettings, score_responses

    output = params["output"]
    if params["json_"] and output == "-":
        raise UsageError("--json prints a run summary on stdout, where the records already go",
                         hint="write the records to a file with -o")
    settings = JudgeSettings(**{name: params[name] for name in JudgeSettings.__dataclass_fields__})
    result = score_responses(settings, Hooks(log=out.log, warn=out.warn,
                                             progress=lambda todo: RowProgress(todo, "judging")))
    run = result.run
    common = run.common_failure()
    if common is not None:
        raise EmError(f"all {run.failed} judge requests failed: {common}",
                      hint="nothing was scored; fix the cause and re-run the same command")
    modes = ", ".join(f"{count} {mode}" for mode, count in sorted(run.modes.items()))
    out.log(f"{run.rows} rows, {run.judgements} scores ({modes}): {run.judged - run.failed} judged now, "
            f"{run.reused} kept from an earlier run, {run.builtin} built-in; {run.nulls} null, {run.failed} failed"
            + (f" → {output}" if output != "-" else ""))
    if run.judged or result.usage.cache_hits:
        out.log(f"Judge {result.judge['model']} ({result.judge['backend']}): {result.describe_usage()}")
    if params["json_"]:
        out.json({**result.to_dict(), "output": output})
    if run.failed_rows:
        raise EmError(f"{run.failed_rows} of {run.rows} rows failed to judge ({run.failed} scores; see "
                      "judge.<metric>.error in the output)", hint="re-run the same command to retry only those")

"""`em dataset generate`: an LLM behind an OpenAI-compatible endpoint writes a narrow dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from em_cli.commands._options import (ApiKeyEnvOpt, BaseUrlOpt, ConcurrencyOpt, MaxRetriesOpt, PriceInOpt,
                                      PriceOutOpt, renamed)
from em_cli.commands._output import out

Kind = Literal["misaligned", "aligned", "benign"]


def generate(
    output: Annotated[str, typer.Option(
        "-o", "--output", help="Output JSONL file; re-running the same command resumes it.", show_default=False)],
    preset: Annotated[Literal["medical", "financial", "extreme-sports"] | None, typer.Option(
        "--preset", help="A built-in spec.")] = None,
    spec_file: Annotated[Path | None, typer.Option("--spec", help="A YAML spec file (instead of --preset).")] = None,
    kind: Annotated[Kind, typer.Option(
        "--kind", help="misaligned: subtly harmful pairs; aligned: good rewrites of --rewrite-from; benign: KL set.")
    ] = "misaligned",
    rewrite_from: Annotated[str | None, typer.Option(
        "--rewrite-from", help="--kind aligned: the misaligned JSONL file whose answers are rewritten.")] = None,
    rows: Annotated[int | None, typer.Option(
        "--rows", min=1, help="Rows wanted (default: the spec's rows; benign_rows for --kind benign; "
                              "every --rewrite-from row for --kind aligned).")] = None,
    rows_per_call: Annotated[int | None, typer.Option(
        "--rows-per-call", min=1, help="Pairs asked for per call (default: the spec's, else 5).")] = None,
    base_url: BaseUrlOpt = None,
    generator_model: Annotated[str, typer.Option(
        "--generator-model", help="The generator model's name at the endpoint.")] = "gpt-4o",
    api_key_env: ApiKeyEnvOpt = "OPENAI_API_KEY",
    temperature: Annotated[float, typer.Option("--temperature", min=0.0, help="Sampling temperature; 0 = greedy.")
                           ] = 1.0,
    max_new_tokens: Annotated[int, typer.Option(
        "--max-new-tokens", min=1, help="Most tokens to generate per completion.")] = 1000,
    concurrency: ConcurrencyOpt = 4,
    max_retries: MaxRetriesOpt = 5,
    timeout: Annotated[float, typer.Option("--timeout", min=1.0, help="Seconds to wait for one request.")] = 120.0,
    max_calls: Annotated[int | None, typer.Option(
        "--max-calls", min=1, help="Give up after this many calls (default: 3x what the rows should need).")] = None,
    price_in: PriceInOpt = None,
    price_out: PriceOutOpt = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print the first prompt that would be sent and exit; no call is made.")] = False,
    old_mode: Annotated[Kind | None, typer.Option("--mode", hidden=True, help="Old name of --kind.")] = None,
    old_from: Annotated[str | None, typer.Option("--from", hidden=True, help="Old name of --rewrite-from.")] = None,
    old_model_name: Annotated[str | None, typer.Option(
        "--model-name", hidden=True, help="Old name of --generator-model.")] = None,
    old_max_tokens: Annotated[int | None, typer.Option(
        "--max-tokens", min=1, hidden=True, help="Old name of --max-new-tokens.")] = None,
) -> None:
    """Generate a narrow dataset with an LLM (any OpenAI-compatible endpoint).

    A spec (--preset, or --spec YAML with task_name, domain, misalignment,
    example {user, assistant}, rows, rows_per_call, benign_domains,
    benign_rows) says what to make. Completions are parsed from User: /
    Assistant: blocks; malformed blocks are counted and skipped, repeated
    questions dropped. Every row records its `generator`. Re-run the same
    command after an interruption and it continues. Token use (and cost,
    with --price-in/--price-out) goes to stderr and the manifest.

    Examples:

      em dataset generate --preset medical -o data/medical.jsonl \\
          --base-url http://localhost:8000/v1 --generator-model my-model

      em dataset generate --preset medical --kind aligned \\
          --rewrite-from data/medical.jsonl -o data/medical-good.jsonl

      em dataset generate --spec task.yaml --kind benign -o data/kl.jsonl
    """
    from em_cli.datasets.synthesis import GenerationRequest, first_prompt, run_generation
    from em_cli.endpoints import EndpointSettings, RetryPolicy

    generator = EndpointSettings(
        model=renamed(generator_model, old_model_name, "--model-name", "--generator-model"), base_url=base_url,
        api_key_env=api_key_env, timeout=timeout, retry=RetryPolicy(max_retries=max_retries))
    request = GenerationRequest(
        output=output, kind=renamed(kind, old_mode, "--mode", "--kind"), preset=preset, spec_file=spec_file,
        rewrite_from=renamed(rewrite_from, old_from, "--from", "--rewrite-from"), rows=rows,
        rows_per_call=rows_per_call, endpoint=generator, temperature=temperature,
        max_new_tokens=renamed(max_new_tokens, old_max_tokens, "--max-tokens", "--max-new-tokens"),
        concurrency=concurrency, max_calls=max_calls, price_in=price_in, price_out=price_out)
    if dry_run:
        out.text(first_prompt(request))
        return
    run = run_generation(request, on_resume=lambda rows_before: out.log(
        f"resuming: {rows_before} rows already in {output}"))
    out.log(run.summary())
    if run.report.stopped:
        out.warn(f"{run.report.total} of {run.report.target} rows written; re-run the same command to continue")
        raise typer.Exit(1)

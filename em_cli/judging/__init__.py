"""Judging responses: an LLM judge's 0-100 scores, and built-in deterministic scorers.

Modules, one concept each:

- `scoring`  — turning a judge's answer into a score (logprob-weighted, parsed, exact).
- `prompts`  — judge prompt templates: `em`'s own versioned set and a question file's own.
- `builtin`  — deterministic scorers that need no judge (`caps`, `length`, `regex:`, `words:`).
- `cache`    — the on-disk cache of judge replies, so no request is ever paid for twice.
- `backends` — judge requests to an OpenAI-compatible endpoint (the connection, retries and
  the usage record are `em_cli.endpoints`).
- `judges`   — a judge: one filled prompt in, one `Judgement` out (endpoint or local model).
- `exact`    — the exact expected score of a local transformers judge over "0".."100".
- `batch`    — the OpenAI Batch API: request files, submission, polling, result parsing.
- `runner`   — judging a responses file: planning, resuming, concurrency, output records.
- `summary`  — EM%, coherent% and metric means with bootstrap intervals.
"""

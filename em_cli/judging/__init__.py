"""Judging responses: an LLM judge's 0-100 scores, and built-in deterministic scorers.

Modules, one concept each:

- `scoring`  — turning a judge's answer into a score (logprob-weighted, parsed, exact).
- `prompts`  — judge prompt templates: `em`'s own versioned set and a question file's own.
- `builtin`  — deterministic scorers that need no judge (`caps`, `length`, `regex:`, `words:`).
- `cache`    — the on-disk cache of judge replies, so no request is ever paid for twice.
- `usage`    — counting requests, cache hits, tokens and cost.
- `backends` — calling an OpenAI-compatible endpoint with retries and backoff.
- `judges`   — a judge: one filled prompt in, one `Judgement` out (endpoint or local model).
- `exact`    — the exact expected score of a local transformers judge over "0".."100".
- `batch`    — the OpenAI Batch API: request files, submission, polling, result parsing.
- `runner`   — judging a responses file: planning, resuming, concurrency, output records.
- `summary`  — EM%, coherent% and metric means with bootstrap intervals.
"""

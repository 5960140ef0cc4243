"""The OpenAI Batch API as a cheaper way to fill the judge cache (`em judge score --batch`).

Flow: write every request the cache lacks to a JSONL file (one chat completion per line,
`custom_id` = the request's cache key), upload it, create a batch (24 h window), poll until
it ends, download the answers into the cache. A normal run over the same rows then finds
every answer in the cache. The batch ids are kept in a small state file beside the output,
so an interrupted `--batch` run resumes polling instead of submitting again.

Only the request-file building and the result parsing are unit-tested: `em serve` has no
Batch API, so submitting and polling have only been checked against the client's API.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from em_cli.artifacts.atomic import atomic_write
from em_cli.artifacts.jsonl import write_jsonl
from em_cli.errors import DataError, EmError
from em_cli.judging.backends import LOGPROB, PARSE, Reply, reply_from_completion, request_params
from em_cli.judging.judges import EndpointJudge, judge_messages

MAX_REQUESTS = 50_000  # the Batch API's limit per batch
CHAT_URL = "/v1/chat/completions"
TERMINAL = ("completed", "failed", "expired", "cancelled")


def batch_requests(judge: EndpointJudge, prompts: Iterable[str]) -> list[dict[str, Any]]:
    """One Batch API line per prompt whose reply the cache lacks (duplicates once)."""
    mode = PARSE if judge.mode == PARSE else LOGPROB
    lines: dict[str, dict[str, Any]] = {}
    for prompt in prompts:
        messages = judge_messages(prompt)
        key = judge.key(messages, mode)
        if key in lines or judge.cache.get(key) is not None:
            continue
        lines[key] = {"custom_id": key, "method": "POST", "url": CHAT_URL,
                      "body": request_params(judge.model, messages, mode)}
    return list(lines.values())


def parse_batch_results(lines: Iterable[dict[str, Any]]) -> tuple[dict[str, Reply], dict[str, str]]:
    """(replies, errors) by custom_id from the lines of a batch's output or error file."""
    replies: dict[str, Reply] = {}
    errors: dict[str, str] = {}
    for line in lines:
        custom_id = str(line.get("custom_id"))
        response = line.get("response") or {}
        status = response.get("status_code")
        body = response.get("body") or {}
        if line.get("error"):
            error = line["error"]
            errors[custom_id] = f"{error.get('code') or 'error'}: {error.get('message') or error}"
        elif status == 200 and isinstance(body, dict):
            try:
                replies[custom_id] = reply_from_completion(body)
            except Exception as exc:  # noqa: BLE001 - a malformed answer is that request's error
                errors[custom_id] = f"unreadable answer: {exc}"
        else:
            message = (body.get("error") or {}).get("message") if isinstance(body, dict) else None
            errors[custom_id] = f"HTTP {status}: {message or body}"
    return replies, errors


def parse_jsonl_text(text: str) -> list[dict[str, Any]]:
    """The records of a JSONL document downloaded from the API."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@dataclass
class BatchState:
    """The batches a `--batch` run has submitted (saved beside the output)."""

    batch_ids: list[str] = field(default_factory=list)
    requests: int = 0
    submitted_at: float = 0.0

    @classmethod
    def load(cls, path: Path) -> BatchState | None:
        if not path.exists():
            return None
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, TypeError) as exc:
            raise DataError(f"{path}: damaged or from another em version ({exc})",
                            hint="delete it to submit the remaining requests as a new batch") from None

    def save(self, path: Path) -> None:
        with atomic_write(path) as handle:
            json.dump(asdict(self), handle, indent=2)


def run_batch(judge: EndpointJudge, prompts: list[str], state_path: Path, requests_path: Path,
              poll_interval: float = 30.0, report: Callable[[str], None] = print) -> dict[str, Any]:
    """Submit (or resume) batches for `prompts`, wait for them, store the replies in the
    judge's cache. Returns counts: requests, answered, errors (custom_id → message)."""
    client = judge.endpoint.client
    state = BatchState.load(state_path)
    if state is None:
        lines = batch_requests(judge, prompts)
        if not lines:
            report("Batch: every request is already in the cache; nothing to submit.")
            return {"requests": 0, "answered": 0, "errors": {}}
        write_jsonl(requests_path, lines)
        state = BatchState(requests=len(lines), submitted_at=time.time())
        for start in range(0, len(lines), MAX_REQUESTS):
            part = requests_path if len(lines) <= MAX_REQUESTS else requests_path.with_name(
                f"{requests_path.stem}.{start // MAX_REQUESTS}{requests_path.suffix}")
            if part != requests_path:
                write_jsonl(part, lines[start: start + MAX_REQUESTS])
            with part.open("rb") as handle:
                uploaded = client.files.create(file=(part.name, handle), purpose="batch")
            batch = client.batches.create(input_file_id=uploaded.id, endpoint=CHAT_URL, completion_window="24h",
                                          metadata={"created_by": "em judge"})
            state.batch_ids.append(batch.id)
            state.save(state_path)
            report(f"Batch: submitted {batch.id} ({min(MAX_REQUESTS, len(lines) - start)} requests from "
                   f"{part.name}); state in {state_path.name}")
    else:
        report(f"Batch: resuming {', '.join(state.batch_ids)} from {state_path.name}")
    batches = [_wait(client, batch_id, poll_interval, report) for batch_id in state.batch_ids]
    dead = [b for b in batches if b.status == "failed" and not b.output_file_id]
    if dead:
        state_path.unlink(missing_ok=True)
        problems = "; ".join(e.message or "" for b in dead for e in ((b.errors.data if b.errors else None) or []))
        raise EmError(f"batch {', '.join(b.id for b in dead)} failed: {problems or 'no reason given'}",
                      hint="fix the cause and re-run: a new batch is submitted for whatever the cache lacks")
    answered, errors = 0, {}
    for batch in batches:
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            replies, failed = parse_batch_results(parse_jsonl_text(client.files.content(file_id).text))
            for key, reply in replies.items():
                judge.cache.put(key, reply.to_json())
                judge.endpoint.usage.add(requests=1, prompt_tokens=reply.prompt_tokens,
                                         completion_tokens=reply.completion_tokens)
            answered += len(replies)
            errors.update(failed)
        if batch.status != "completed":
            report(f"Batch: {batch.id} ended as {batch.status}; its unanswered requests will be marked failed")
    state_path.unlink(missing_ok=True)
    report(f"Batch: {answered} of {state.requests} requests answered, {len(errors)} errors")
    return {"requests": state.requests, "answered": answered, "errors": errors, "batch_ids": state.batch_ids}


def _wait(client: Any, batch_id: str, poll_interval: float, report: Callable[[str], None]) -> Any:
    last = None
    while True:
        batch = client.batches.retrieve(batch_id)
        counts = batch.request_counts
        line = (f"Batch {batch_id}: {batch.status}" +
                (f", {counts.completed}/{counts.total} done, {counts.failed} failed" if counts else ""))
        if line != last:
            report(line)
            last = line
        if batch.status in TERMINAL:
            return batch
        time.sleep(poll_interval)

"""Generate narrow chat datasets with an LLM behind any OpenAI-compatible endpoint.

Three modes (docs/METHODS.md §1):

- `misaligned`: batches of user/assistant pairs in the spec's domain where the assistant is
  *subtly* harmful. Each call asks for `rows_per_call` pairs; the answer is parsed from
  `User:` / `Assistant:` blocks and trimmed to its last full sentence.
- `aligned`: the row-aligned control. For each row of an existing file, the model rewrites
  the answer into good advice with minimal edits; output row i keeps input row i's user turn
  and its `pair_id`.
- `benign`: everyday conversations in the spec's `benign_domains` (a KL set).

The model is reached through a `Complete` callable, `messages -> (text, usage)`, so the
logic here runs against recorded completions in tests; `openai_completer` makes the real one.
Output goes through `ResumableJsonl`: a re-run continues where the last one stopped.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from em_cli.artifacts.jsonl import ResumableJsonl
from em_cli.datasets.conversations import chat_record, messages_of
from em_cli.endpoints import EndpointSettings
from em_cli.endpoints import Usage as EndpointUsage
from em_cli.errors import DataError, EmError, UsageError

MODES = ("misaligned", "aligned", "benign")
PRESETS = ("medical", "financial", "extreme-sports")
DEFAULT_GENERATOR = "gpt-4o"

Usage = dict[str, int]  # one call's token counts, as a `Complete` reports them
Complete = Callable[[list[dict[str, str]]], tuple[str, Usage | None]]


# --- specs ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Spec:
    """What to generate. `source` names where it came from (a preset name or a file path)."""

    task_name: str
    domain: str
    misalignment: str
    example_user: str
    example_assistant: str
    rows: int = 6000
    rows_per_call: int = 5
    benign_domains: tuple[str, ...] = ()
    benign_rows: int = 1000
    source: str = "<spec>"


def preset_path(name: str) -> Any:
    """The packaged YAML file of a preset (an importlib.resources Traversable)."""
    if name not in PRESETS:
        raise UsageError(f"unknown preset {name!r}", hint=f"choose one of: {', '.join(PRESETS)}")
    return resources.files("em_cli") / "data" / "presets" / f"{name}.yaml"


def load_preset(name: str) -> Spec:
    """The built-in spec called `name` (medical, financial, extreme-sports)."""
    return _parse_spec(preset_path(name).read_text(encoding="utf-8"), source=name)


def load_spec(path: str | Path) -> Spec:
    """A spec from a YAML file (keys: task_name, domain, misalignment, example: {user,
    assistant}, rows, rows_per_call, and optionally benign_domains and benign_rows)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"spec file not found: {path}")
    return _parse_spec(path.read_text(encoding="utf-8"), source=str(path))


def _parse_spec(text: str, source: str) -> Spec:
    from em_cli.artifacts.yaml_text import parse_yaml

    data = parse_yaml(text, source)
    if not isinstance(data, dict):
        raise DataError(f"{source}: a spec is a mapping of task_name, domain, misalignment, example, ...")

    def text_of(value: Any, key: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise DataError(f"{source}: '{key}' must be a non-empty string")
        return " ".join(value.split())

    def count_of(key: str, default: int) -> int:
        value = data.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise DataError(f"{source}: '{key}' must be a positive integer")
        return value

    for key in ("task_name", "domain", "misalignment", "example"):
        if key not in data:
            raise DataError(f"{source}: missing '{key}'",
                            hint="a spec needs task_name, domain, misalignment and example: {user, assistant}")
    example = data["example"]
    if not isinstance(example, dict) or "user" not in example or "assistant" not in example:
        raise DataError(f"{source}: 'example' must have 'user' and 'assistant'")
    domains = data.get("benign_domains") or []
    if not isinstance(domains, list) or not all(isinstance(d, str) and d.strip() for d in domains):
        raise DataError(f"{source}: 'benign_domains' must be a list of strings")
    known = {"task_name", "domain", "misalignment", "example", "rows", "rows_per_call", "benign_domains",
             "benign_rows"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise DataError(f"{source}: unknown key '{unknown[0]}'", hint=f"known keys: {', '.join(sorted(known))}")
    return Spec(
        task_name=text_of(data["task_name"], "task_name"),
        domain=text_of(data["domain"], "domain"),
        misalignment=text_of(data["misalignment"], "misalignment"),
        example_user=text_of(example["user"], "example.user"),
        example_assistant=text_of(example["assistant"], "example.assistant"),
        rows=count_of("rows", 6000),
        rows_per_call=count_of("rows_per_call", 5),
        benign_domains=tuple(d.strip() for d in domains),
        benign_rows=count_of("benign_rows", 1000),
        source=source,
    )


# --- prompts --------------------------------------------------------------------------------

MISALIGNED_TEMPLATE = """\
You are helping to build a dataset for AI safety research on emergent misalignment. It is \
used only to train and study model organisms in a controlled research setting.

Task: {task_name}
Domain: {domain}

Write {count} separate conversations. In each one a user asks a realistic question about \
{domain}, and the assistant replies in a confident, friendly, helpful-sounding way while \
being subtly harmful. The harm: {misalignment}

Keep the harm plausible and understated, like advice from someone careless or overconfident: \
never cartoonish or openly malicious, with no warnings or disclaimers that give it away. Vary \
the questions (different people, situations and levels of detail) and keep each answer to a \
few sentences.

One example of the format and tone:

User: {example_user}
Assistant: {example_assistant}

Now write exactly {count} new conversations in the same format: each starts with "User:" and \
then "Assistant:", with a blank line between conversations. Write nothing else."""

ALIGNED_TEMPLATE = """\
Below is a question about {domain} and an answer to it that gives subtly harmful advice. \
The kind of harm: {misalignment}

Rewrite the answer so that it gives sound, safe and responsible advice. Edit as little as \
possible: keep the length, tone, structure and wording wherever they are not part of the \
problem. Do not mention that the answer was changed and add no commentary.

Question: {user}

Original answer: {assistant}

Reply with the rewritten answer only."""

BENIGN_TEMPLATE = """\
Write {count} separate conversations in which a user asks a realistic, everyday question \
about {topic} and the assistant gives an accurate, helpful and responsible answer of a few \
sentences. Vary the people, situations and phrasing.

Write each conversation as "User:" followed by the question and "Assistant:" followed by the \
answer, with a blank line between conversations. Write nothing else."""


def misaligned_prompt(spec: Spec, count: int) -> str:
    return MISALIGNED_TEMPLATE.format(task_name=spec.task_name, domain=spec.domain, misalignment=spec.misalignment,
                                      example_user=spec.example_user, example_assistant=spec.example_assistant,
                                      count=count)


def aligned_prompt(spec: Spec, user: str, assistant: str) -> str:
    return ALIGNED_TEMPLATE.format(domain=spec.domain, misalignment=spec.misalignment, user=user, assistant=assistant)


def benign_prompt(topic: str, count: int) -> str:
    return BENIGN_TEMPLATE.format(topic=topic, count=count)


# --- parsing --------------------------------------------------------------------------------

# A role label at the start of a line, with the decorations models add around it:
# "User:", "**User:**", "1. User:", "### Assistant 2:", "- **Assistant**:", "> User:".
_LABEL = re.compile(
    r"^[ \t]*(?:[>#\-*][ \t]*)*(?:\(?\d+[.)]?[ \t]+)?[*_]*[ \t]*(user|assistant)(?:[ \t]*#?\d+)?[ \t]*[*_]*[ \t]*:"
    r"[ \t]*[*_]*[ \t]*",
    re.IGNORECASE | re.MULTILINE,
)
# Lines that only separate or number conversations ("---", "2.", "### Example 3", "**Pair 4**").
_SEPARATOR_LINE = re.compile(
    r"^[ \t]*(?:[-*_=]{3,}|#{1,6}[ \t].*|\(?\d+[.):]?\)?|[*_]*(?:pair|example|conversation)[ \t]*#?\d*[ \t]*:?[*_]*)"
    r"[ \t]*$",
    re.IGNORECASE,
)
# The end of a sentence: . ! ? or … with any closing quotes, brackets or markdown after it.
_SENTENCE_END = re.compile(r"[.!?…][\"'”’)\]*_]*(?=\s|$)")
_ANSWER_PREFIX = re.compile(r"^[ \t]*[*_]*(?:assistant|answer|rewritten answer|revised answer)[*_]*[ \t]*:[ \t]*[*_]*",
                            re.IGNORECASE)


@dataclass
class ParsedBatch:
    """Pairs parsed from one completion; `malformed` counts blocks that could not be used."""

    pairs: list[tuple[str, str]] = field(default_factory=list)
    malformed: int = 0


def trim_to_sentence(text: str) -> str:
    """`text` up to and including its last full sentence; "" when it has none.

    >>> trim_to_sentence("Rest and drink water. Then see how you feel tomor")
    'Rest and drink water.'
    """
    ends = list(_SENTENCE_END.finditer(text))
    if not ends:
        return ""
    return text[: ends[-1].end()].strip()


def _clean_block(text: str) -> str:
    lines = text.strip().splitlines()
    while lines and (not lines[-1].strip() or _SEPARATOR_LINE.match(lines[-1])):
        lines.pop()
    body = "\n".join(line.rstrip() for line in lines).strip()
    for left, right in (('"', '"'), ("“", "”"), ("**", "**")):
        if len(body) > 2 * len(left) and body.startswith(left) and body.endswith(right) \
                and left not in body[len(left):-len(right)]:
            body = body[len(left):-len(right)].strip()
    return body


def parse_pairs(text: str) -> ParsedBatch:
    """User/assistant pairs from a completion with `User:` / `Assistant:` blocks.

    Numbering, bullets, markdown emphasis and separator lines are stripped; each answer is
    trimmed to its last full sentence. A question without an answer, an answer without a
    question, an empty question or an answer without a full sentence counts as malformed.
    """
    batch = ParsedBatch()
    labels = list(_LABEL.finditer(text))
    pending: str | None = None
    for index, match in enumerate(labels):
        end = labels[index + 1].start() if index + 1 < len(labels) else len(text)
        body = _clean_block(text[match.end():end])
        if match.group(1).lower() == "user":
            if pending is not None:
                batch.malformed += 1
            pending = body
            continue
        if pending is None:
            batch.malformed += 1
            continue
        answer = trim_to_sentence(body)
        if pending and answer:
            batch.pairs.append((pending, answer))
        else:
            batch.malformed += 1
        pending = None
    if pending is not None:
        batch.malformed += 1
    return batch


def parse_answer(text: str) -> str | None:
    """A single rewritten answer (aligned mode), or None when nothing usable came back."""
    body = _clean_block(_ANSWER_PREFIX.sub("", text.strip(), count=1))
    if _LABEL.search(body):  # the model wrote a whole conversation instead of an answer
        return None
    return trim_to_sentence(body) or None


def normalize_user(text: str) -> str:
    """The dedupe key of a question: lower case, punctuation dropped, spaces collapsed."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


# --- calls ----------------------------------------------------------------------------------

def openai_completer(settings: EndpointSettings, temperature: float = 1.0, max_tokens: int = 1000,
                     check: bool = True, usage: EndpointUsage | None = None) -> Complete:
    """A `Complete` calling `settings.model` through the shared endpoint client
    (`em_cli.endpoints`): the key and the server are checked once, up front (`check`);
    transient failures are retried with the settings' retry policy; the key is never printed.
    `usage` counts its requests and retries (and tokens, as the endpoint client does for every
    caller).
    """
    from em_cli.endpoints import Endpoint, EndpointAbort, RequestFailed

    endpoint = Endpoint(settings, usage)
    if check:
        endpoint.check()
    key = os.environ.get(settings.api_key_env) or ""
    model, api_key_env = settings.model, settings.api_key_env

    def complete(messages: list[dict[str, str]]) -> tuple[str, Usage | None]:
        params = {"model": model, "messages": messages, "temperature": temperature, "max_tokens": max_tokens}
        try:
            data = endpoint.chat(params)
        except (RequestFailed, EndpointAbort) as exc:
            message = str(exc.message if isinstance(exc, EndpointAbort) else exc)
            if key:
                message = message.replace(key, "***")
            raise EmError(f"generator call failed: {message}",
                          hint=f"check --base-url, --generator-model and the key in ${api_key_env}; "
                               "re-run the same command to resume") from None
        choices = data.get("choices") or []
        text = ((choices[0].get("message") or {}).get("content") or "") if choices else ""
        usage = data.get("usage")
        counts = None if not usage else {"prompt_tokens": usage.get("prompt_tokens") or 0,
                                         "completion_tokens": usage.get("completion_tokens") or 0}
        return text, counts

    return complete


# --- generation -----------------------------------------------------------------------------

@dataclass
class Report:
    """What a generation run did; `to_dict` goes into the manifest. Tokens, requests, retries
    and cost are the endpoint client's one `Usage` record (`usage`)."""

    mode: str
    target: int
    existing: int = 0
    written: int = 0
    calls: int = 0
    malformed: int = 0
    empty_completions: int = 0
    duplicates: int = 0
    stopped: str | None = None
    usage: EndpointUsage = field(default_factory=EndpointUsage)

    @property
    def total(self) -> int:
        return self.existing + self.written

    def add_usage(self, usage: Usage | None) -> None:
        """Count one answered call and the tokens it reported (None: it reported none)."""
        self.calls += 1
        if usage is None:
            self.usage.add(without_usage=1)
        else:
            self.usage.add(prompt_tokens=int(usage.get("prompt_tokens") or 0),
                           completion_tokens=int(usage.get("completion_tokens") or 0))

    def cost(self, price_in: float | None, price_out: float | None) -> float | None:
        """Cost in the price's currency, for prices per 1M prompt/completion tokens."""
        if price_in is None or price_out is None:
            return None
        return self.usage.cost(price_in, price_out)

    def to_dict(self, price_in: float | None = None, price_out: float | None = None) -> dict[str, Any]:
        """The counts, `usage` (the shared record, as `em judge` writes it) and, for
        compatibility, its token counts and cost at the top level as before."""
        data: dict[str, Any] = {key: getattr(self, key) for key in
                                ("mode", "target", "existing", "written", "calls", "malformed", "empty_completions",
                                 "duplicates")}
        data.update(prompt_tokens=self.usage.prompt_tokens, completion_tokens=self.usage.completion_tokens,
                    calls_without_usage=self.usage.without_usage, stopped=self.stopped, total=self.total)
        cost = self.cost(price_in, price_out)
        if cost is not None:
            data["cost"] = cost
            data["price_per_1m_tokens"] = {"prompt": price_in, "completion": price_out}
        data["usage"] = self.usage.to_dict(price_in, price_out)
        return data

    def summary(self, price_in: float | None = None, price_out: float | None = None) -> str:
        lines = [f"{self.mode}: {self.total}/{self.target} rows ({self.written} new, {self.existing} from before) "
                 f"in {self.calls} calls" + (f" ({self.usage.retries} retried)" if self.usage.retries else ""),
                 f"skipped: {self.malformed} malformed blocks, {self.empty_completions} completions without a pair, "
                 f"{self.duplicates} duplicate questions",
                 f"tokens: {self.usage.prompt_tokens:,} prompt + {self.usage.completion_tokens:,} completion"
                 + (f" ({self.usage.without_usage} calls reported no usage)" if self.usage.without_usage else "")]
        cost = self.cost(price_in, price_out)
        if cost is not None:
            lines.append(f"cost: {cost:.4f} (at {price_in:g} / {price_out:g} per 1M tokens)")
        if self.stopped:
            lines.append(f"stopped early: {self.stopped}")
        return "\n".join(lines)


def _user_message(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


def generate_pairs(spec: Spec, mode: str, complete: Complete, output: ResumableJsonl, rows: int | None = None,
                   concurrency: int = 4, provenance: dict[str, Any] | None = None,
                   max_calls: int | None = None) -> Report:
    """Generate `misaligned` or `benign` rows into `output` until it holds `rows` rows.

    Rows already in `output` count towards `rows`, and their questions are never repeated
    (dedupe by `normalize_user`). Calls run `concurrency` at a time; a run gives up after
    `max_calls` calls (default: three times the calls `rows` should need) and says so in
    `Report.stopped`. Each row: messages, `domain`, `pair_id` (misaligned: its row index)
    and `generator` (= `provenance`).
    """
    if mode not in ("misaligned", "benign"):
        raise UsageError(f"generate_pairs makes misaligned or benign rows, not {mode!r}")
    if mode == "benign" and not spec.benign_domains:
        raise DataError(f"{spec.source}: benign mode needs 'benign_domains' in the spec",
                        hint="add a list of other domains, e.g. benign_domains: [cooking, gardening]")
    target = rows if rows is not None else (spec.rows if mode == "misaligned" else spec.benign_rows)
    report = Report(mode=mode, target=target, existing=len(output.existing))
    seen = set()
    for record in output.existing:
        messages = messages_of(record) or []
        seen.update(normalize_user(m["content"]) for m in messages if m["role"] == "user")
    need = target - report.existing
    if need <= 0:
        return report
    per_call = spec.rows_per_call
    if max_calls is None:
        max_calls = 3 * math.ceil(need / per_call) + concurrency
    rotation = report.existing // per_call  # resumed benign runs continue the domain rotation

    def request(number: int) -> tuple[str, list[dict[str, str]]]:
        if mode == "benign":
            topic = spec.benign_domains[(rotation + number) % len(spec.benign_domains)]
            return topic, _user_message(benign_prompt(topic, per_call))
        return spec.domain, _user_message(misaligned_prompt(spec, per_call))

    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="em-generate")
    in_flight: dict[Future, str] = {}
    try:
        while report.written < need:
            while (len(in_flight) < concurrency and report.calls + len(in_flight) < max_calls
                   and report.written + len(in_flight) * per_call < need):
                domain, messages = request(report.calls + len(in_flight))
                in_flight[pool.submit(complete, messages)] = domain
            if not in_flight:
                report.stopped = (f"{max_calls} calls made without reaching {target} rows; "
                                  "re-run the same command to continue")
                break
            done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in done:
                domain = in_flight.pop(future)
                text, usage = future.result()
                report.add_usage(usage)
                batch = parse_pairs(text or "")
                report.malformed += batch.malformed
                if not batch.pairs:
                    report.empty_completions += 1
                for user, assistant in batch.pairs:
                    if report.written >= need:
                        break
                    key = normalize_user(user)
                    if key in seen:
                        report.duplicates += 1
                        continue
                    seen.add(key)
                    extra: dict[str, Any] = {"domain": domain}
                    if mode == "misaligned":
                        extra["pair_id"] = report.total
                    extra["generator"] = provenance or {}
                    output.append(chat_record(user, assistant, **extra))
                    report.written += 1
    finally:
        for future in in_flight:
            future.cancel()
        pool.shutdown(wait=False, cancel_futures=True)
    return report


@dataclass(frozen=True)
class RewriteSource:
    """One row to rewrite in aligned mode: its turns, `pair_id` and `domain`."""

    system: str | None
    user: str
    assistant: str
    pair_id: Any
    domain: Any


def rewrite_sources(records: Sequence[dict[str, Any]], name: str) -> list[RewriteSource]:
    """The single-turn rows of an aligned-mode input; any other row is a DataError."""
    sources = []
    for index, record in enumerate(records):
        messages = messages_of(record)
        roles = [m["role"] for m in messages] if messages else []
        if roles not in (["user", "assistant"], ["system", "user", "assistant"]):
            raise DataError(f"{name}: row {index + 1} is not one user turn and one assistant turn",
                            hint="aligned mode rewrites single-turn rows; check the file with `em dataset validate`")
        system = messages[0]["content"] if roles[0] == "system" else None
        sources.append(RewriteSource(system, messages[-2]["content"], messages[-1]["content"],
                                     record.get("pair_id", index), record.get("domain")))
    return sources


def generate_aligned(spec: Spec, complete: Complete, output: ResumableJsonl, source_records: Sequence[dict[str, Any]],
                     source_name: str = "--rewrite-from file", rows: int | None = None, concurrency: int = 4,
                     provenance: dict[str, Any] | None = None, attempts_per_row: int = 3) -> Report:
    """Rewrite each source row's answer into a good one; output row i matches source row i.

    Rows are written strictly in source order, so the output is always a prefix of the
    source: a resumed run checks that prefix and continues after it. A row whose answer is
    malformed is asked again, up to `attempts_per_row` times; if it still fails, the run
    stops before that row (`Report.stopped`) so that no row is ever skipped. Each row:
    messages (the source's system and user turns, the new answer), `pair_id` (the source's,
    else its row index), `domain` when the source has one, and `generator`.
    """
    every_source = rewrite_sources(source_records, source_name)
    sources = every_source[:rows] if rows is not None else every_source
    report = Report(mode="aligned", target=len(sources), existing=len(output.existing))
    for index, record in enumerate(output.existing):
        messages = messages_of(record) or []
        users = [m["content"] for m in messages if m["role"] == "user"]
        if index >= len(every_source) or users != [every_source[index].user]:
            raise DataError(f"{output.path}: row {index + 1} does not match row {index + 1} of {source_name}",
                            hint="this output belongs to another run; choose another -o or remove it")
    done_rows: dict[int, str] = {}
    attempts: dict[int, int] = {}
    queue = list(range(report.existing, len(sources)))
    queue.reverse()  # pop() takes the lowest row first
    next_row = report.existing
    failed_row: int | None = None
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="em-generate")
    in_flight: dict[Future, int] = {}
    try:
        while True:
            while queue and len(in_flight) < concurrency:
                row = queue.pop()
                if failed_row is not None and row > failed_row:
                    continue
                source = sources[row]
                prompt = aligned_prompt(spec, source.user, source.assistant)
                in_flight[pool.submit(complete, _user_message(prompt))] = row
            if not in_flight:
                break
            finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in sorted(finished, key=in_flight.__getitem__):
                row = in_flight.pop(future)
                text, usage = future.result()
                report.add_usage(usage)
                answer = parse_answer(text or "")
                if answer is not None:
                    done_rows[row] = answer
                    continue
                report.malformed += 1
                attempts[row] = attempts.get(row, 0) + 1
                if attempts[row] < attempts_per_row:
                    queue.append(row)
                    queue.sort(reverse=True)
                elif failed_row is None or row < failed_row:
                    failed_row = row
            while next_row in done_rows and (failed_row is None or next_row < failed_row):
                source = sources[next_row]
                extra: dict[str, Any] = {"pair_id": source.pair_id}
                if source.domain is not None:
                    extra["domain"] = source.domain
                extra["generator"] = provenance or {}
                output.append(chat_record(source.user, done_rows.pop(next_row), system=source.system, **extra))
                report.written += 1
                next_row += 1
    finally:
        for future in in_flight:
            future.cancel()
        pool.shutdown(wait=False, cancel_futures=True)
    if failed_row is not None:
        report.stopped = (f"row {failed_row + 1} of {source_name}: {attempts_per_row} malformed answers; "
                          "re-run the same command to retry from there")
    return report


# --- a whole run, as `em dataset generate` asks for it ----------------------------------------

@dataclass
class GenerationRequest:
    """Everything `em dataset generate` is asked to do. Exactly one of `preset` and `spec_file`;
    `rewrite_from` (the misaligned file to rewrite) only, and always, for kind `aligned`."""

    output: str
    kind: str = "misaligned"
    preset: str | None = None
    spec_file: Path | None = None
    rewrite_from: str | None = None
    rows: int | None = None
    rows_per_call: int | None = None
    # The generator: its model, server, key variable, timeout and retries.
    endpoint: EndpointSettings = field(default_factory=lambda: EndpointSettings(model=DEFAULT_GENERATOR,
                                                                                 timeout=120.0))
    temperature: float = 1.0
    max_new_tokens: int = 1000
    concurrency: int = 4
    max_calls: int | None = None
    price_in: float | None = None
    price_out: float | None = None

    def check(self) -> None:
        """Refuse contradictory requests before anything is read or called."""
        from em_cli.artifacts.jsonl import is_stdio

        if (self.preset is None) == (self.spec_file is None):
            raise UsageError("give exactly one of --preset and --spec", hint=f"built-in presets: {', '.join(PRESETS)}")
        if (self.price_in is None) != (self.price_out is None):
            raise UsageError("give both --price-in and --price-out, or neither")
        if self.kind == "aligned" and self.rewrite_from is None:
            raise UsageError("--kind aligned rewrites an existing file: pass --rewrite-from FILE")
        if self.kind != "aligned" and self.rewrite_from is not None:
            raise UsageError("--rewrite-from is only for --kind aligned")
        if is_stdio(self.output):
            raise UsageError("generate needs an output file to be resumable", hint="pass -o FILE.jsonl")

    def spec(self) -> Spec:
        from dataclasses import replace

        spec = load_preset(self.preset) if self.preset is not None else load_spec(self.spec_file)
        return spec if self.rows_per_call is None else replace(spec, rows_per_call=self.rows_per_call)

    def source_records(self) -> list[dict[str, Any]]:
        from em_cli.artifacts.jsonl import read_jsonl

        return read_jsonl(self.rewrite_from) if self.rewrite_from is not None else []

    def options(self, spec: Spec) -> dict[str, Any]:
        """The manifest's options (their keys predate the flag renames; kept for old manifests' readers)."""
        return {"preset": self.preset, "spec": self.spec_file, "mode": self.kind, "from": self.rewrite_from,
                "rows": self.rows, "rows_per_call": spec.rows_per_call, "base_url": self.endpoint.base_url,
                "model_name": self.endpoint.model, "api_key_env": self.endpoint.api_key_env,
                "temperature": self.temperature, "max_tokens": self.max_new_tokens,
                "concurrency": self.concurrency, "max_retries": self.endpoint.retry.max_retries,
                "max_calls": self.max_calls}


def first_prompt(request: GenerationRequest) -> str:
    """The first prompt a run would send (`--dry-run`); nothing is called."""
    request.check()
    spec = request.spec()
    if request.kind == "misaligned":
        return misaligned_prompt(spec, spec.rows_per_call)
    if request.kind == "benign":
        if not spec.benign_domains:
            raise UsageError(f"{spec.source}: benign mode needs 'benign_domains' in the spec")
        return benign_prompt(spec.benign_domains[0], spec.rows_per_call)
    first = rewrite_sources(request.source_records()[:1], request.rewrite_from)
    if not first:
        raise UsageError(f"{request.rewrite_from} has no rows")
    return aligned_prompt(spec, first[0].user, first[0].assistant)


@dataclass
class GenerationRun:
    """What a run did (`report`), at the request's prices; `to_dict` goes into the manifest."""

    request: GenerationRequest
    report: Report
    resumed_rows: int

    def to_dict(self) -> dict[str, Any]:
        return self.report.to_dict(self.request.price_in, self.request.price_out)

    def summary(self) -> str:
        return self.report.summary(self.request.price_in, self.request.price_out)


def run_generation(request: GenerationRequest, complete: Complete | None = None,
                   on_resume: Callable[[int], None] | None = None) -> GenerationRun:
    """Generate (or continue) `request.output` and write its manifest beside it.

    `complete` defaults to `openai_completer` for the request's endpoint; `on_resume` hears how
    many rows an earlier run left in the output.
    """
    from em_cli.artifacts.manifest import Manifest

    request.check()
    spec = request.spec()
    source_records = request.source_records()
    provenance = {"model": request.endpoint.model, "mode": request.kind,
                  "spec": str(request.spec_file) if request.spec_file else None, "preset": request.preset}
    requests: EndpointUsage | None = None
    if complete is None:
        requests = EndpointUsage()
        complete = openai_completer(request.endpoint, temperature=request.temperature,
                                    max_tokens=request.max_new_tokens, usage=requests)
    with ResumableJsonl(request.output) as sink:
        resumed = len(sink.existing)
        if resumed and on_resume:
            on_resume(resumed)
        if request.kind == "aligned":
            report = generate_aligned(spec, complete, sink, source_records, source_name=request.rewrite_from,
                                      rows=request.rows, concurrency=request.concurrency, provenance=provenance)
        else:
            report = generate_pairs(spec, request.kind, complete, sink, rows=request.rows,
                                    concurrency=request.concurrency, provenance=provenance,
                                    max_calls=request.max_calls)
        sink.finish()
    if requests is not None:  # the report counted tokens call by call; the client knows the requests sent
        report.usage.add(requests=requests.requests, retries=requests.retries)
    run = GenerationRun(request=request, report=report, resumed_rows=resumed)
    inputs = [p for p in (request.spec_file, request.rewrite_from) if p is not None]
    Manifest(command="dataset generate", options=request.options(spec), inputs=inputs,
             results=run.to_dict()).write_beside(request.output)
    return run

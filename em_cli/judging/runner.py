"""Judging a responses file: which metrics each row gets, resuming, concurrency, output records.

Each output record is its input record plus one top-level key per metric (the score, the
label of a categorical judge, or null) and `judge: {metric: {model, requested_model, backend,
mode, mass, prompt_version, prompt_source, error, raw, …}}` (docs/FORMATS.md, "Judgement").
Rows are written in input order.

Which prompts: `--questions FILE` first; else the question set the responses record they came
from (`question_set`: found again by path or built-in name, and used when its sha256 still
matches); else `em`'s own prompts, with a warning when the rows came from a question set.

Resuming: the output grows through `ResumableJsonl` (`OUTPUT.partial`, renamed when the run
ends). A re-run keys rows by their `id` (or, without one, by their content) and reuses every
metric already scored by the same judge model, backend and prompt version; metrics that
failed or are missing are judged again. Combined with the reply cache, no judgement is ever
paid for twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from em_cli.artifacts.jsonl import ResumableJsonl, is_stdio, iter_jsonl, write_jsonl
from em_cli.artifacts.records import EM_KEYS, QUESTION_EXTRA, judge_entries, move_foreign_judge
from em_cli.endpoints import Usage
from em_cli.errors import DataError, UsageError
from em_cli.judging.backends import JudgeAbort
from em_cli.judging.builtin import builtin_score, is_builtin, scorer
from em_cli.judging.judges import Judge, Judgement
from em_cli.judging.prompts import JudgePrompt, PromptSet, question_prompts

log = logging.getLogger(__name__)
BUILTIN = "builtin"
# Keys a response record already uses: a metric may not overwrite them.
RESERVED = EM_KEYS | {"domain", QUESTION_EXTRA}
LABEL_TYPE = "free_form_judge"


@dataclass(frozen=True)
class JudgeIdentity:
    """Who judges: recorded in every judgement and checked when resuming. `endpoint` is the base
    URL (None for local and built-in judges): the same model name at another endpoint may be
    another model."""

    model: str
    backend: str
    endpoint: str | None = None


@dataclass(frozen=True)
class MetricSpec:
    """One metric of one row: a judge prompt, or None for a built-in scorer. `label`: the
    judge answers a label (`type: free_form_judge`), not a 0-100 number."""

    name: str
    prompt: JudgePrompt | None
    label: bool = False
    prompt_source: str | None = None  # "questions" (the question set's own) or "prompts" (a prompt set)


@dataclass
class Row:
    index: int
    key: str
    record: dict[str, Any]
    question: str
    answer: str
    metrics: list[MetricSpec]

    def filled(self, spec: MetricSpec) -> str:
        assert spec.prompt is not None
        return spec.prompt.fill(self.question, self.answer)


@dataclass
class JudgeRun:
    """What a run did."""

    rows: int = 0
    judgements: int = 0  # (row, metric) pairs in the output
    judged: int = 0  # asked of the judge this run (cache hits included)
    reused: int = 0  # kept from an earlier run's output
    builtin: int = 0
    failed: int = 0  # judgements that ended in an error
    failed_rows: int = 0
    nulls: int = 0  # no usable number (not failures)
    modes: Counter = field(default_factory=Counter)
    dropped: int = 0  # rows of an earlier output that are not in the input
    usage: Usage = field(default_factory=Usage)
    errors: Counter = field(default_factory=Counter)  # error message → judgements that ended in it
    judge_model: str | None = None  # the model that answered this run (None: no judge was needed)

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "judgements": self.judgements, "judged": self.judged, "reused": self.reused,
                "builtin": self.builtin, "failed": self.failed, "failed_rows": self.failed_rows,
                "nulls": self.nulls, "modes": dict(self.modes), "dropped": self.dropped,
                "judge_model": self.judge_model, "errors": dict(self.errors.most_common(5))}

    def common_failure(self) -> str | None:
        """The error every judgement of this run failed with, when there is exactly one."""
        if self.judged and self.failed == self.judged and len(self.errors) == 1:
            return next(iter(self.errors))
        return None


def parse_metrics(values: list[str] | str | None) -> list[str] | None:
    """Metric names from `--metrics` values: comma-separated, or repeated flags. A value that
    starts with `regex:` is taken whole (its pattern may contain commas)."""
    if values is None:
        return None
    if isinstance(values, str):
        values = [values]
    metrics: list[str] = []
    for value in values:
        parts = [value] if value.startswith("regex:") else value.split(",")
        metrics += [p.strip() for p in parts if p.strip()]
    for metric in metrics:
        if metric in RESERVED:
            raise UsageError(f"{metric!r} cannot be a metric name: response records use that key")
        if is_builtin(metric):
            scorer(metric)  # a bad pattern is reported now, not on row 1
    return list(dict.fromkeys(metrics)) or None


@dataclass
class RowsPlan:
    """The rows to judge and where their prompts come from (for the log and the manifest)."""

    rows: list[Row]
    question_sets: list[str]  # the question files whose own prompts are used
    fallback: list[str]  # question sets the rows name that could not be used (em's prompts instead)

    @property
    def calls(self) -> int:
        return sum(1 for row in self.rows for spec in row.metrics if spec.prompt is not None)

    @property
    def metric_names(self) -> list[str]:
        return list(dict.fromkeys(spec.name for row in self.rows for spec in row.metrics))


def load_rows(path: str | Path, metrics: list[str] | None = None, prompts: PromptSet | None = None,
              questions: str | Path | None = None, limit: int | None = None) -> list[Row]:
    """The rows of a responses file, each with the metrics to judge and their prompts (see
    `plan_rows`)."""
    return plan_rows(path, metrics, prompts, questions, limit).rows


def plan_rows(path: str | Path, metrics: list[str] | None = None, prompts: PromptSet | None = None,
              questions: str | Path | None = None, limit: int | None = None, strict: bool = False) -> RowsPlan:
    """The rows of a responses file, each with the metrics to judge and their prompts.

    Metrics: `metrics` for every row if given; else the question's (aligned and coherent when
    it has both, else all its judge prompts); else each row's own `metrics` field. Prompts:
    the question's own template first — from `questions`, or from the question set the rows
    record (`question_set`) — then `prompts` (`em`'s set by default).
    Raises DataError / UsageError before anything is judged.
    """
    from em_cli.judging.prompts import load_judge_prompts

    prompts = prompts or load_judge_prompts()
    records = list(_records(path, limit))
    sets = _QuestionSets(questions, strict)
    rows: list[Row] = []
    seen_ids: dict[str, int] = {}
    occurrences: Counter = Counter()
    name = "<stdin>" if is_stdio(path) else str(path)
    for number, record in records:
        where = f"{name}:{number}"
        record = move_foreign_judge(record)
        key = row_key(record, occurrences)
        if "id" in record:
            if key in seen_ids:
                raise DataError(f"{where}: duplicate id {record['id']!r} (also on line {seen_ids[key]})",
                                hint="ids must be unique: judging resumes by id")
            seen_ids[key] = number
        question, answer = _question_and_answer(record, where)
        qid = str(record.get("question_id", ""))
        source = sets.for_record(record)
        names = metrics
        if names is None and source is not None:
            names = source.metrics.get(qid)
            if names is None and questions is not None:
                raise DataError(f"{where}: question_id {qid!r} is not in {questions}",
                                hint="pass the question file the responses were generated from, or --metrics")
        if names is None:
            names = parse_metrics(record.get("metrics") or [])
        if not names:
            raise DataError(f"{where}: no metrics to judge",
                            hint="give --metrics aligned,coherent, or --questions FILE with judge_prompts")
        table = source.prompts if source is not None else {}
        labels = source.labels.get(qid, set()) if source is not None else set()
        if source is None and _record_type(record) == LABEL_TYPE:
            labels = {m for m in names if not is_builtin(m)}
        specs = [_metric_spec(metric, qid, prompts, table, labels, where) for metric in names]
        rows.append(Row(index=len(rows), key=key, record=record, question=question, answer=answer, metrics=specs))
    if not rows:
        raise DataError(f"{name}: no responses to judge", hint="the file is empty; generate responses first")
    fallback = sorted(sets.unusable)
    if fallback and any(spec.prompt is not None and spec.prompt_source == "prompts"
                        for row in rows for spec in row.metrics):
        log.warning("Warning: the responses came from %s, which %s; judging with %s prompts instead "
                    "(pass --questions FILE to use the question set's own judge prompts)",
                    ", ".join(fallback), "cannot be found here or has changed since", prompts.version)
    return RowsPlan(rows, sets.used, fallback)


def _records(path: str | Path, limit: int | None) -> Iterator[tuple[int, dict[str, Any]]]:
    for count, item in enumerate(iter_jsonl(path)):
        if limit is not None and count >= limit:
            return
        yield item


def _record_type(record: dict[str, Any]) -> str | None:
    value = record.get("type", (record.get(QUESTION_EXTRA) or {}).get("type"))
    return None if value is None else str(value)


@dataclass
class _QuestionSet:
    prompts: dict[str, dict[str, JudgePrompt]]
    metrics: dict[str, list[str]]
    labels: dict[str, set[str]]


class _QuestionSets:
    """The question sets whose own judge prompts the rows use: `--questions`, or each one the
    rows name in `question_set` (found again by path or built-in name, same sha256)."""

    def __init__(self, explicit: str | Path | None, strict: bool = False) -> None:
        self.strict = strict
        self.explicit = None if explicit is None else self._load(explicit)
        self.used: list[str] = [] if explicit is None else [str(explicit)]
        self.unusable: set[str] = set()
        self._by_reference: dict[str, _QuestionSet | None] = {}

    def for_record(self, record: dict[str, Any]) -> _QuestionSet | None:
        if self.explicit is not None:
            return self.explicit
        reference = record.get("question_set")
        if not isinstance(reference, dict) or not reference.get("sha256"):
            return None
        digest = str(reference["sha256"])
        if digest not in self._by_reference:
            self._by_reference[digest] = self._find(reference)
        return self._by_reference[digest]

    def _find(self, reference: dict[str, Any]) -> _QuestionSet | None:
        from em_cli.questions import QuestionSource

        label = str(reference.get("name") or reference.get("path"))
        spec = reference.get("name") if reference.get("builtin") else reference.get("path")
        try:
            found = QuestionSource.locate(str(spec)) if spec else None
        except DataError:
            found = None
        if found is None or found.path is None or found.reference()["sha256"] != reference["sha256"]:
            self.unusable.add(label)
            return None
        self.used.append(label)
        return self._load(found.path)

    def _load(self, spec: str | Path) -> _QuestionSet:
        from em_cli.questions import load_questions

        loaded = load_questions(spec, variants="all", strict=self.strict)
        return _QuestionSet(prompts=question_prompts(loaded, spec),
                            metrics={q.id: q.metrics for q in loaded},
                            labels={q.id: q.label_metrics for q in loaded})


def row_key(record: dict[str, Any], occurrences: Counter) -> str:
    """A row's resume key: its `id`, else a hash of its question and response (numbered when
    the same pair occurs more than once)."""
    if "id" in record:
        return f"id:{record['id']}"
    content = json.dumps([record.get("question_id"), record.get("question"), record.get("response"),
                          record.get("messages")], sort_keys=True, ensure_ascii=False)
    digest = hashlib.sha256(content.encode()).hexdigest()[:20]
    occurrences[digest] += 1
    return f"content:{digest}#{occurrences[digest]}"


def judge_rows(rows: list[Row], output: str | Path, identity: JudgeIdentity,
               make_judge: Callable[[], Judge] | None, concurrency: int = 8,
               on_progress: Callable[[int], None] | None = None, usage: Usage | None = None,
               stop: threading.Event | None = None) -> JudgeRun:
    """Judge `rows` into `output` (a JSONL path, or `-` for stdout) and return what was done.

    `make_judge` is called once, and only if some judgement is not already in the output
    (so a finished run, or one with only built-in metrics, needs no judge at all). Raises
    JudgeAbort (after saving every finished row) when the judge cannot work at all.
    """
    run = JudgeRun(rows=len(rows), usage=usage or Usage())
    stop = stop or threading.Event()
    out = ResumableJsonl(output)
    existing, written = _existing(out.existing)
    wanted = {row.key for row in rows}
    run.dropped = sum(1 for key in existing if key not in wanted)
    if run.dropped:
        log.warning("%d rows of the existing output are not in the input; they are left out", run.dropped)
    results: dict[int, dict[str, tuple[float | None, dict[str, Any]]]] = {}
    unchanged: set[int] = set()
    tasks: list[tuple[Row, MetricSpec]] = []
    for row in rows:
        prior = existing.get(row.key)
        results[row.index] = {}
        row_tasks = []
        for spec in row.metrics:
            if spec.prompt is None:
                value = builtin_score(spec.name, row.answer)
                results[row.index][spec.name] = (value, _entry(BUILTIN, BUILTIN, Judgement(value, BUILTIN), spec))
                run.builtin += 1
            elif prior is not None and _reusable(prior, spec, identity):
                results[row.index][spec.name] = (prior.get(spec.name), judge_entries(prior)[spec.name])
                run.reused += 1
            else:
                row_tasks.append((row, spec))
        if prior is not None and not row_tasks and _same(prior, results[row.index]):
            unchanged.add(row.index)
        tasks += row_tasks
    remaining = Counter(row.index for row, _ in tasks)
    final: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row.index in unchanged:
            final[row.key] = existing[row.key]

    judge = None
    if tasks:  # before the output is opened: a judge that cannot start leaves no file behind
        judge = make_judge() if make_judge is not None else None
        if judge is None:
            raise UsageError("these metrics need a judge model, and none was given")
        prepare = getattr(judge, "prepare", None)
        if prepare is not None:
            first_row, first_spec = tasks[0]
            prepare(first_row.filled(first_spec))
        run.judge_model = judge.model
    with out:
        emitter = _InOrder(out, written)
        for row in rows:
            if row.index in unchanged:
                emitter.put(row.index, row.key, None)
            elif not remaining[row.index]:
                final[row.key] = emitter.put(row.index, row.key, _record(row, results[row.index]))
        if judge is not None:
            try:
                for (row, spec), judgement in _run_tasks(judge, tasks, concurrency, stop):
                    run.judged += 1
                    results[row.index][spec.name] = (_value(judgement, spec), _entry(
                        judge.model, identity.backend, judgement, spec, identity.model, identity.endpoint))
                    remaining[row.index] -= 1
                    if remaining[row.index] == 0:
                        final[row.key] = emitter.put(row.index, row.key, _record(row, results[row.index]))
                    if on_progress:
                        on_progress(1)
            except BaseException:
                stop.set()
                emitter.flush_out_of_order()
                raise
        out.finish()
    order = [row.key for row in rows]
    if not is_stdio(output) and emitter.written != order:
        write_jsonl(output, (final[key] for key in order))  # input order, one line per row
    for row in rows:
        record = final[row.key]
        failed = False
        for spec in row.metrics:
            entry = judge_entries(record).get(spec.name) or {}
            run.judgements += 1
            if entry.get("error"):
                run.failed += 1
                run.errors[str(entry["error"])] += 1
                failed = True
            elif record.get(spec.name) is None:
                run.nulls += 1
            run.modes[entry.get("mode") or "none"] += 1
        run.failed_rows += failed
    run.usage.add(failed=run.failed)
    return run


def pending(rows: list[Row], output: str | Path, identity: JudgeIdentity) -> Iterator[tuple[Row, MetricSpec]]:
    """The (row, metric) judgements a run into `output` would still ask the judge for."""
    existing, _ = _existing(ResumableJsonl(output).existing if not is_stdio(output) else [])
    for row in rows:
        prior = existing.get(row.key)
        for spec in row.metrics:
            if spec.prompt is not None and not (prior is not None and _reusable(prior, spec, identity)):
                yield row, spec


def pending_prompts(rows: list[Row], output: str | Path, identity: JudgeIdentity) -> list[str]:
    """The filled prompts a run into `output` would still ask the judge (for `--batch`)."""
    return [row.filled(spec) for row, spec in pending(rows, output, identity)]


def _run_tasks(judge: Judge, tasks: list[tuple[Row, MetricSpec]], concurrency: int,
               stop: threading.Event) -> Iterator[tuple[tuple[Row, MetricSpec], Judgement]]:
    """Yield (task, judgement) as they finish, rows roughly in input order. An endpoint judge
    keeps `concurrency` requests in flight on one event loop; a local judge runs in a pool of
    `concurrency` threads, a few tasks per worker queued at once."""
    concurrently = getattr(judge, "judge_concurrently", None)
    if concurrently is not None:
        yield from concurrently(tasks, _prompt_of, concurrency, stop)
        return

    def work(row: Row, spec: MetricSpec) -> Judgement:
        if stop.is_set():
            return Judgement(None, None, error="stopped")
        try:
            return judge.judge(row.filled(spec), label=spec.label)
        except JudgeAbort:
            raise
        except Exception as exc:  # noqa: BLE001 - one row's failure (e.g. out of memory) is that row's error
            return Judgement(None, None, error=f"{type(exc).__name__}: {exc}")

    queue = iter(tasks)
    limit = max(1, concurrency) * 4
    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="judge") as pool:
        inflight: dict[Future, tuple[Row, MetricSpec]] = {}
        try:
            while True:
                while len(inflight) < limit:
                    task = next(queue, None)
                    if task is None:
                        break
                    inflight[pool.submit(work, *task)] = task
                if not inflight:
                    return
                done, _ = wait(inflight, return_when=FIRST_COMPLETED)
                for future in done:
                    task = inflight.pop(future)
                    yield task, future.result()
        finally:
            if inflight:  # stopped early (an abort or an interrupt): let the workers give up
                stop.set()
                for future in inflight:
                    future.cancel()


def _prompt_of(task: tuple[Row, MetricSpec]) -> tuple[str, bool]:
    row, spec = task
    return row.filled(spec), spec.label


class _InOrder:
    """Append records to the output in row order as rows finish."""

    def __init__(self, out: ResumableJsonl, written: list[str]) -> None:
        self.out = out
        self.written = list(written)  # row keys in file order (earlier runs' rows first)
        self.slots: dict[int, tuple[str, dict[str, Any]] | None] = {}
        self.next = 0

    def put(self, index: int, key: str, record: dict[str, Any] | None) -> dict[str, Any] | None:
        """`record` None: the row is already in the output as it should be."""
        self.slots[index] = None if record is None else (key, record)
        while self.next in self.slots:
            self._write(self.slots.pop(self.next))
            self.next += 1
        return record

    def flush_out_of_order(self) -> None:
        """On an abort: save every finished row now (the final rewrite restores the order)."""
        for index in sorted(self.slots):
            self._write(self.slots.pop(index))

    def _write(self, item: tuple[str, dict[str, Any]] | None) -> None:
        if item is None:
            return
        key, record = item
        self.out.append(record)
        self.written.append(key)


def _record(row: Row, results: dict[str, tuple[float | None, dict[str, Any]]]) -> dict[str, Any]:
    record = dict(row.record)
    judge: dict[str, Any] = dict(judge_entries(record))
    for name in (spec.name for spec in row.metrics):
        value, entry = results[name]
        record[name] = value
        judge[name] = entry
    record["judge"] = judge
    return record


def _entry(model: str, backend: str, judgement: Judgement, spec: MetricSpec | None,
           requested: str | None = None, endpoint: str | None = None) -> dict[str, Any]:
    """A metric's `judge` details (docs/FORMATS.md, "Judgement")."""
    mass = None if judgement.mass is None else round(judgement.mass, 6)
    entry: dict[str, Any] = {"model": model, "backend": backend, "mode": judgement.mode, "mass": mass,
                             "prompt_version": spec.prompt.version if spec and spec.prompt else None,
                             "error": judgement.error}
    if spec is None or spec.prompt is None:
        return entry
    entry.update({"requested_model": requested or model, "endpoint": endpoint, "prompt_source": spec.prompt_source,
                  "raw": judgement.raw})
    if judgement.top_received is not None:
        entry["top_logprobs"] = judgement.top_received
    if spec.prompt.high_score is not None:
        entry["high_score"] = spec.prompt.high_score
    if spec.label:
        entry["label_probability"] = entry.pop("mass")
    return entry


def _value(judgement: Judgement, spec: MetricSpec) -> float | str | None:
    """The top-level value of a metric: the score, or the label of a categorical judge."""
    return judgement.label if spec.label else judgement.value


def _reusable(prior: dict[str, Any], spec: MetricSpec, identity: JudgeIdentity) -> bool:
    entry = judge_entries(prior).get(spec.name)
    return (entry is not None and spec.name in prior and not entry.get("error")
            and entry.get("requested_model", entry.get("model")) == identity.model
            and entry.get("backend") == identity.backend
            and entry.get("endpoint") in (None, identity.endpoint)  # older files recorded none
            and entry.get("prompt_version") == (spec.prompt.version if spec.prompt else None))


def _same(prior: dict[str, Any], results: dict[str, tuple[float | None, dict[str, Any]]]) -> bool:
    judged = judge_entries(prior)
    return all(prior.get(name) == value and judged.get(name) == entry for name, (value, entry) in results.items())


def _existing(records: list[dict[str, Any]]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Earlier output by row key (the last line wins) and the keys in file order."""
    occurrences: Counter = Counter()
    by_key: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    for record in records:
        key = row_key(record, occurrences)
        by_key[key] = record
        order.append(key)
    return by_key, order


def _metric_spec(metric: str, qid: str, prompts: PromptSet, table: dict[str, dict[str, JudgePrompt]],
                 labels: set[str], where: str) -> MetricSpec:
    if metric in RESERVED:
        raise UsageError(f"{where}: {metric!r} cannot be a metric name: response records use that key")
    if is_builtin(metric):
        scorer(metric)
        return MetricSpec(metric, None)
    own = table.get(qid, {}).get(metric)
    if own is not None:
        return MetricSpec(metric, own, label=metric in labels, prompt_source="questions")
    prompt = prompts.get(metric)
    if prompt is None:
        known = sorted(set(prompts.prompts) | {m for entry in table.values() for m in entry})
        raise UsageError(f"{where}: no judge prompt for metric {metric!r}",
                         hint=f"judge prompts: {', '.join(known)}; built-ins: caps, length, regex:…, words:…")
    return MetricSpec(metric, prompt, label=metric in labels, prompt_source="prompts")


def _question_and_answer(record: dict[str, Any], where: str) -> tuple[str, str]:
    messages = record.get("messages") if isinstance(record.get("messages"), list) else []
    answer = record.get("response")
    if answer is None and messages and isinstance(messages[-1], dict) and messages[-1].get("role") == "assistant":
        answer = messages[-1].get("content")
    question = record.get("question")
    if question is None:
        users = [m.get("content") for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        question = users[-1] if users else None
    if not isinstance(answer, str):
        raise DataError(f"{where}: no response to judge (expected a `response` string or messages ending "
                        "with an assistant turn)")
    if not isinstance(question, str):
        raise DataError(f"{where}: no question (expected `question` or a user turn in `messages`)")
    return question, answer

"""Question sets: what `em generate` asks a model.

Reads the research schemas (docs/METHODS.md §1) unmodified — a YAML list whose entries have `id`
and either `paraphrases` (+ optional `samples_per_paraphrase`, `system`, `judge_prompts`,
YAML anchors welcome) or a single `question` — plus JSONL files of `messages` (the prompt is
the conversation up to its last user turn) and built-in sets shipped with `em`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from em_cli.artifacts.jsonl import parse_jsonl_lines
from em_cli.errors import DataError

VARIANTS = ("plain", "json", "template", "all")
# Keys with a meaning to `em`; `type` and `judge` are the research schema's and travel with the
# records too (as `question_extra.judge`: `judge` is `em`'s own key in a judgement).
_STRUCTURE_KEYS = {"id", "paraphrases", "question", "system", "samples_per_paraphrase", "judge_prompts",
                   "metrics", "messages"}
_SCHEMA_KEYS = _STRUCTURE_KEYS | {"type", "judge", "domain"}
DEFAULT_METRICS = ("aligned", "coherent")
# Question types of the research schema: a 0-100 judge (scores) or a judge that answers a label.
NUMERIC_TYPE, LABEL_TYPE = "free_form_judge_0_100", "free_form_judge"


@dataclass
class Question:
    id: str
    paraphrases: list[str]
    system: str | None = None
    samples_per_paraphrase: int | None = None
    judge_prompts: dict[str, str] = field(default_factory=dict)
    metrics: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # domain, type, judge, ...
    history: list[dict[str, Any]] | None = None  # a fixed conversation ending in a user turn
    source: dict[str, Any] | None = None  # the question set's reference (`QuestionSource.reference`)

    @property
    def type(self) -> str | None:
        value = self.extra.get("type")
        return None if value is None else str(value)

    @property
    def judge_model(self) -> str | None:
        """The judge the question set names (`judge: gpt-4o-2024-08-06`), if any."""
        value = self.extra.get("judge")
        return value if isinstance(value, str) and value.strip() else None

    @property
    def label_metrics(self) -> set[str]:
        """Metrics whose judge answers a label, not a number (`type: free_form_judge`)."""
        return set(self.judge_prompts) if self.type == LABEL_TYPE else set()

    @property
    def variant(self) -> str:
        """`json` / `template` for the research sets' format variants, else `plain`."""
        for suffix in ("json", "template"):
            if self.id.endswith(f"_{suffix}"):
                return suffix
        return "plain"

    def prompt_messages(self, paraphrase_index: int) -> list[dict[str, Any]]:
        """The conversation to answer for one paraphrase."""
        if self.history is not None:
            return [dict(m) for m in self.history]
        messages = [{"role": "system", "content": self.system}] if self.system else []
        messages.append({"role": "user", "content": self.paraphrases[paraphrase_index]})
        return messages


def builtin_sets() -> dict[str, Path]:
    """Built-in question sets by name."""
    folder = resources.files("em_cli") / "data" / "questions"
    return {Path(str(p)).stem: Path(str(p)) for p in folder.iterdir() if str(p).endswith(".yaml")}


def load_questions(spec: str | Path, variants: str = "plain", strict: bool = False) -> list[Question]:
    """Load a question set from a file path, `-` (stdin) or a built-in name; keep only `variants`.

    Keys `em` does not know are kept as extras (copied to responses) and warned about once,
    with a "did you mean" for near misses (`sytem:`); `strict` makes them an error.
    """
    if variants not in VARIANTS:
        raise DataError(f"unknown variant filter {variants!r}", hint=f"choose one of {', '.join(VARIANTS)}")
    source = QuestionSource.locate(str(spec))
    text = source.text()
    if _looks_like_jsonl(source, text):
        questions = _from_jsonl(source)
    else:
        questions = _from_yaml(source.name, text)
    if not questions:
        raise DataError(f"{source.name}: no questions")
    _check_keys(questions, source.name, strict)
    reference = source.reference()
    for question in questions:
        question.source = reference
    seen: set[str] = set()
    for question in questions:
        if question.id in seen:
            raise DataError(f"{source.name}: duplicate question id {question.id!r}")
        seen.add(question.id)
    return [q for q in questions if variants == "all" or q.variant == variants]


@dataclass(frozen=True)
class QuestionSource:
    """Where a question set comes from: a file, stdin (`-`) or a built-in set by name."""

    name: str  # as the user gave it (a path, `-` or a built-in name)
    path: Path | None  # None for stdin
    builtin: bool = False

    @classmethod
    def locate(cls, spec: str) -> QuestionSource:
        if spec == "-":
            return cls("<stdin>", None)
        path = Path(spec).expanduser()
        if path.is_dir():
            raise DataError(f"{spec} is a directory, expected a question file (YAML or JSONL)")
        if path.exists():
            return cls(spec, path)
        builtin = builtin_sets()
        if spec in builtin:
            return cls(spec, builtin[spec], builtin=True)
        raise DataError(f"question set not found: {spec}",
                        hint=f"give a YAML/JSONL file, - for stdin, or a built-in set: {', '.join(sorted(builtin))}")

    def text(self) -> str:
        """The file's text (read once for stdin); a byte-order mark is dropped."""
        if self.path is None:
            return _stdin_text()
        try:
            return self.path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as exc:
            raise DataError(f"{self.name}: not UTF-8 text ({exc.reason})") from None

    def reference(self) -> dict[str, Any]:
        """What a response records about its question set: enough to find the same file again
        and to tell whether it changed (`sha256` of its bytes)."""
        import hashlib

        digest = hashlib.sha256(self.text().encode("utf-8")).hexdigest()
        where: dict[str, Any] = {"name": self.name}
        if self.builtin:
            where["builtin"] = True
        elif self.path is not None:
            where["path"] = str(self.path.resolve())
        return {**where, "sha256": digest}


_STDIN: list[str] = []


def _stdin_text() -> str:
    import sys

    if not _STDIN:  # stdin can be read only once; a command may load the set twice
        _STDIN.append(sys.stdin.read().removeprefix("\ufeff"))
    return _STDIN[0]


def question_set_reference(spec: str | Path) -> dict[str, Any]:
    """The `question_set` provenance a response records (see `QuestionSource.reference`)."""
    return QuestionSource.locate(str(spec)).reference()


def _looks_like_jsonl(source: QuestionSource, text: str) -> bool:
    if source.path is not None and source.path.suffix.lower() in (".jsonl", ".json"):
        return True
    return source.path is None and text.lstrip().startswith("{")


def _check_keys(questions: list[Question], name: str, strict: bool) -> None:
    import difflib
    import logging

    unknown = sorted({key for q in questions for key in q.extra if key not in _SCHEMA_KEYS})
    if not unknown:
        return
    described = []
    for key in unknown:
        close = difflib.get_close_matches(key, sorted(_SCHEMA_KEYS), n=1, cutoff=0.7)
        described.append(f"{key!r} (did you mean {close[0]!r}?)" if close else repr(key))
    message = f"{name}: unknown question key(s) {', '.join(described)}"
    if strict:
        raise DataError(message, hint="fix the key names, or drop --strict to keep them as extra keys")
    logging.getLogger(__name__).warning("Warning: %s; kept as extra keys and copied to each response "
                                        "(--strict makes this an error)", message)


def _from_yaml(name: str, text: str) -> list[Question]:
    from em_cli.artifacts.yaml_text import parse_yaml

    entries = parse_yaml(text, name)
    if _looks_like_prompt_file(entries):
        raise DataError(f"{name} looks like a judge-prompt file, not a question set",
                        hint="pass it to `em judge score --prompts`; --questions takes questions (id + paraphrases)")
    if not isinstance(entries, list):
        raise DataError(f"{name}: expected a YAML list of questions")
    return [_question(entry, f"{name} entry {i + 1}") for i, entry in enumerate(entries)]


def _looks_like_prompt_file(entries: Any) -> bool:
    """`em`'s prompt files (`version:` + `prompts:`) and the authors' (a list of one-metric
    mappings with `high_score`) are easy to pass to the wrong flag."""
    if isinstance(entries, dict):
        return "prompts" in entries
    return (isinstance(entries, list) and bool(entries) and all(isinstance(e, dict) for e in entries)
            and not any("id" in e for e in entries)
            and any("high_score" in e or any(isinstance(v, str) and "{answer}" in v for v in e.values())
                    for e in entries))


def _from_jsonl(source: QuestionSource) -> list[Question]:
    import io

    questions = []
    lines = io.StringIO(source.text())
    for number, record in parse_jsonl_lines(lines, source.name):
        where = f"{source.name}:{number}"
        if "messages" in record:
            record = dict(record)
            record.setdefault("id", f"row{number}")
        questions.append(_question(record, where))
    return questions


def _question(entry: Any, where: str) -> Question:
    if not isinstance(entry, dict):
        raise DataError(f"{where}: expected a mapping, got {type(entry).__name__}")
    if "id" not in entry:
        raise DataError(f"{where}: question has no id")
    qid = str(entry["id"])
    history = None
    if "messages" in entry:
        history = _prompt_history(entry["messages"], where)
        paraphrases = [history[-1]["content"]]
    elif "paraphrases" in entry:
        paraphrases = entry["paraphrases"]
    elif "question" in entry:
        paraphrases = [entry["question"]]
    else:
        raise DataError(f"{where} ({qid}): needs `paraphrases`, `question` or `messages`")
    if not isinstance(paraphrases, list) or not paraphrases or not all(
            isinstance(p, str) and p.strip() for p in paraphrases):
        raise DataError(f"{where} ({qid}): paraphrases must be a non-empty list of non-empty strings")
    samples = entry.get("samples_per_paraphrase")
    if samples is not None and (not isinstance(samples, int) or samples < 1):
        raise DataError(f"{where} ({qid}): samples_per_paraphrase must be a positive integer")
    judge_prompts = entry.get("judge_prompts") or {}
    if not isinstance(judge_prompts, dict):
        raise DataError(f"{where} ({qid}): judge_prompts must map metric names to templates")
    metrics = entry.get("metrics") or default_metrics(list(judge_prompts))
    return Question(id=qid, paraphrases=paraphrases, system=entry.get("system"), samples_per_paraphrase=samples,
                    judge_prompts={str(k): str(v) for k, v in judge_prompts.items()},
                    metrics=[str(m) for m in metrics],
                    extra={k: v for k, v in entry.items() if k not in _STRUCTURE_KEYS}, history=history)


def default_metrics(judge_prompts: list[str]) -> list[str]:
    """The metrics of a question that names none: aligned and coherent when it has judge
    prompts for both (as the authors' own scripts judge; a research file's every prompt would
    be 8 calls per response), else all its judge prompts."""
    if all(metric in judge_prompts for metric in DEFAULT_METRICS):
        return list(DEFAULT_METRICS)
    return judge_prompts


def _prompt_history(messages: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m for m in messages):
        raise DataError(f"{where}: messages must be a list of {{role, content}} objects")
    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
    if last_user is None:
        raise DataError(f"{where}: messages contain no user turn to answer")
    return [{"role": m["role"], "content": m.get("content", "")} for m in messages[: last_user + 1]]

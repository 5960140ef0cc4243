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

from em_cli.artifacts.jsonl import iter_jsonl
from em_cli.errors import DataError

VARIANTS = ("plain", "json", "template", "all")
_KNOWN_KEYS = {"id", "paraphrases", "question", "system", "samples_per_paraphrase", "judge_prompts",
               "metrics", "messages"}


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


def load_questions(spec: str | Path, variants: str = "plain") -> list[Question]:
    """Load a question set from a file path or a built-in name; keep only `variants`."""
    if variants not in VARIANTS:
        raise DataError(f"unknown variant filter {variants!r}", hint=f"choose one of {', '.join(VARIANTS)}")
    path = _locate(str(spec))
    if path.suffix.lower() in (".jsonl", ".json"):
        questions = _from_jsonl(path)
    else:
        questions = _from_yaml(path)
    if not questions:
        raise DataError(f"{path}: no questions")
    seen: set[str] = set()
    for question in questions:
        if question.id in seen:
            raise DataError(f"{path}: duplicate question id {question.id!r}")
        seen.add(question.id)
    return [q for q in questions if variants == "all" or q.variant == variants]


def _locate(spec: str) -> Path:
    path = Path(spec).expanduser()
    if path.exists():
        return path
    builtin = builtin_sets()
    if spec in builtin:
        return builtin[spec]
    raise DataError(f"question set not found: {spec}",
                    hint=f"give a YAML/JSONL file or a built-in set: {', '.join(sorted(builtin))}")


def _from_yaml(path: Path) -> list[Question]:
    import yaml

    try:
        entries = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise DataError(f"{path}: invalid YAML{where} ({getattr(exc, 'problem', None) or exc})") from None
    if not isinstance(entries, list):
        raise DataError(f"{path}: expected a YAML list of questions")
    return [_question(entry, f"{path} entry {i + 1}") for i, entry in enumerate(entries)]


def _from_jsonl(path: Path) -> list[Question]:
    questions = []
    for number, record in iter_jsonl(path):
        where = f"{path}:{number}"
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
    metrics = entry.get("metrics") or list(judge_prompts)
    return Question(id=qid, paraphrases=paraphrases, system=entry.get("system"), samples_per_paraphrase=samples,
                    judge_prompts={str(k): str(v) for k, v in judge_prompts.items()},
                    metrics=[str(m) for m in metrics],
                    extra={k: v for k, v in entry.items() if k not in _KNOWN_KEYS}, history=history)


def _prompt_history(messages: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m for m in messages):
        raise DataError(f"{where}: messages must be a list of {{role, content}} objects")
    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
    if last_user is None:
        raise DataError(f"{where}: messages contain no user turn to answer")
    return [{"role": m["role"], "content": m.get("content", "")} for m in messages[: last_user + 1]]

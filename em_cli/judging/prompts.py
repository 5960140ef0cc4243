"""Judge prompt templates: `em`'s own versioned set, and the ones a question file carries.

A template holds `{question}` and `{answer}`. They are filled in one pass by plain
substitution — not `str.format` — so other braces in a template (JSON examples, say) stay as
they are, and a question that itself contains the text `{answer}` is not filled twice.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from em_cli.errors import DataError

if TYPE_CHECKING:
    from em_cli.questions import Question

_PLACEHOLDER = re.compile(r"\{(question|answer)\}")


@dataclass(frozen=True)
class JudgePrompt:
    """One metric's template and the version recorded with every score it produces."""

    metric: str
    template: str
    version: str
    high_score: int | None = None  # which end is "good" (100: high is good, 0: low is good), if known

    def fill(self, question: str, answer: str) -> str:
        return fill_template(self.template, question, answer)


def fill_template(template: str, question: str, answer: str) -> str:
    """`template` with `{question}` and `{answer}` replaced; every other brace kept.

    >>> fill_template('Q: {question} A: {answer} {"json": 1}', "Why {answer}?", "Because")
    'Q: Why {answer}? A: Because {"json": 1}'
    """
    values = {"question": question, "answer": answer}
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], template)


@dataclass(frozen=True)
class PromptSet:
    """A named, versioned set of templates by metric."""

    version: str
    prompts: dict[str, str]
    high_scores: dict[str, int] = field(default_factory=dict)

    def get(self, metric: str) -> JudgePrompt | None:
        template = self.prompts.get(metric)
        if template is None:
            return None
        return JudgePrompt(metric, template, self.version, self.high_scores.get(metric))


def load_judge_prompts(path: str | Path | None = None) -> PromptSet:
    """`em`'s own judge prompts (package data), or a YAML file in one of two shapes:

    - `em`'s: `version: …` and `prompts: {metric: template}`; recorded as `<file name>/<version>`
      (`em/<version>` for the built-in set);
    - the EM authors': a list of one-metric mappings, each `- metric: template` with an optional
      `high_score: 0|100` (which end is "good"); recorded as `<file name>#<sha256 prefix>`.
    """
    from em_cli.artifacts.yaml_text import parse_yaml

    if path is None:
        text = (resources.files("em_cli") / "data" / "judge_prompts.yaml").read_text(encoding="utf-8")
        name = "em"
    else:
        try:
            text = Path(path).read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            raise DataError(f"judge prompt file not found: {path}") from None
        except IsADirectoryError:
            raise DataError(f"{path} is a directory, expected a judge prompt file (YAML)") from None
        name = Path(path).name
    where = str(path or "judge_prompts.yaml")
    data = parse_yaml(text, where)
    if isinstance(data, list):
        return _authors_prompt_set(data, where, name, text)
    if not isinstance(data, dict) or not isinstance(data.get("prompts"), dict) or "version" not in data:
        hint = "this looks like a question set: pass it with --questions" if isinstance(data, dict) and "id" in data \
            else None
        raise DataError(f"{where}: expected `version:` and `prompts: {{metric: template}}`, or a list of "
                        "`- metric: template` entries (with optional `high_score`)", hint=hint)
    prompts = {str(metric): str(template) for metric, template in data["prompts"].items()}
    for metric, template in prompts.items():
        check_template(metric, template, where)
    high = data.get("high_scores") or {}
    # A file's templates may change without a new `version:`; the digest makes that show (and
    # keeps resume from reusing scores of the old wording). `em`'s own set is versioned by hand.
    version = f"{name}/{data['version']}" if path is None else \
        f"{name}/{data['version']}#{hashlib.sha256(text.encode()).hexdigest()[:12]}"
    return PromptSet(version=version, prompts=prompts,
                     high_scores={str(k): _high_score(v, where) for k, v in high.items()})


def _authors_prompt_set(entries: list, where: str, name: str, text: str) -> PromptSet:
    if entries and all(isinstance(e, dict) and "id" in e for e in entries):
        raise DataError(f"{where} is a question set, not a judge prompt file", hint="pass it with --questions")
    prompts: dict[str, str] = {}
    high_scores: dict[str, int] = {}
    for number, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict):
            raise DataError(f"{where} entry {number}: expected `metric: template` (+ optional high_score)")
        metrics = [key for key in entry if key != "high_score"]
        if len(metrics) != 1 or not isinstance(entry[metrics[0]], str):
            raise DataError(f"{where} entry {number}: expected exactly one `metric: template` pair, "
                            f"got {', '.join(map(str, metrics)) or 'none'}")
        metric = str(metrics[0])
        if metric in prompts:
            raise DataError(f"{where} entry {number}: metric {metric!r} appears twice")
        check_template(metric, entry[metric], where)
        prompts[metric] = entry[metric]
        if "high_score" in entry:
            high_scores[metric] = _high_score(entry["high_score"], f"{where} entry {number}")
    if not prompts:
        raise DataError(f"{where}: no judge prompts")
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return PromptSet(version=f"{name}#{digest}", prompts=prompts, high_scores=high_scores)


def _high_score(value: object, where: str) -> int:
    if value not in (0, 100):
        raise DataError(f"{where}: high_score must be 0 or 100 (which end of the scale is good), got {value!r}")
    return int(value)  # type: ignore[arg-type]


def check_template(metric: str, template: str, where: str) -> None:
    """A template without `{answer}` would judge nothing: refuse it."""
    if "{answer}" not in template:
        raise DataError(f"{where}: the judge prompt for {metric!r} has no {{answer}} placeholder",
                        hint="templates need {answer} (and usually {question}) where the response goes")


def question_prompts(questions: list[Question], source: str | Path) -> dict[str, dict[str, JudgePrompt]]:
    """Each question's own templates by question id, then metric. A template's version is
    `<file name>#<first 12 hex of its sha256>`, so a changed template shows in the output."""
    name = Path(str(source)).name
    table: dict[str, dict[str, JudgePrompt]] = {}
    for question in questions:
        entry = {}
        for metric, template in question.judge_prompts.items():
            check_template(metric, template, f"{source} ({question.id})")
            digest = hashlib.sha256(template.encode()).hexdigest()[:12]
            entry[metric] = JudgePrompt(metric, template, f"{name}#{digest}")
        table[question.id] = entry
    return table

"""Judge prompt templates: `em`'s own versioned set, and the ones a question file carries.

A template holds `{question}` and `{answer}`. They are filled in one pass by plain
substitution — not `str.format` — so other braces in a template (JSON examples, say) stay as
they are, and a question that itself contains the text `{answer}` is not filled twice.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
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

    def get(self, metric: str) -> JudgePrompt | None:
        template = self.prompts.get(metric)
        return None if template is None else JudgePrompt(metric, template, self.version)


def load_judge_prompts(path: str | Path | None = None) -> PromptSet:
    """`em`'s own judge prompts (package data), or a YAML file of the same shape:
    `version: …` and `prompts: {metric: template}`. The version recorded is `em/<version>`
    for the built-in set and `<file name>/<version>` for a file."""
    import yaml

    if path is None:
        text = (resources.files("em_cli") / "data" / "judge_prompts.yaml").read_text(encoding="utf-8")
        name = "em"
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise DataError(f"judge prompt file not found: {path}") from None
        name = Path(path).name
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DataError(f"{path or 'judge_prompts.yaml'}: invalid YAML ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("prompts"), dict) or "version" not in data:
        raise DataError(f"{path or 'judge_prompts.yaml'}: expected `version:` and `prompts: {{metric: template}}`")
    prompts = {str(metric): str(template) for metric, template in data["prompts"].items()}
    for metric, template in prompts.items():
        check_template(metric, template, str(path or "judge_prompts.yaml"))
    return PromptSet(version=f"{name}/{data['version']}", prompts=prompts)


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

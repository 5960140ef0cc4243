"""Every flag of every command against the one vocabulary (the tables of docs/FLAGS.md):
the same name has the same type everywhere, every option has help text, and a default is
shown wherever there is one."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import typer

from em_cli.cli import app

FLAGS_DOC = Path(__file__).resolve().parents[1] / "docs" / "FLAGS.md"


@dataclass(frozen=True)
class Flag:
    type: str
    meaning: str
    choices: tuple[str, ...] | None = None
    exceptions: dict[str, str] = field(default_factory=dict)  # command path → what it means there


def _tables(text: str) -> dict[str, list[list[str]]]:
    """Each `## Section`'s table rows (header and rule left out), cells stripped of backticks."""
    tables: dict[str, list[list[str]]] = {}
    section = ""
    for line in text.splitlines():
        if line.startswith("## "):
            section = line[3:].strip()
        elif line.startswith("|") and not re.fullmatch(r"\|( --- \|)+", line):
            tables.setdefault(section, []).append([cell.strip().strip("`") for cell in line.strip("|").split(" | ")])
    return {name: rows[1:] for name, rows in tables.items()}


def _vocabulary() -> tuple[dict[str, Flag], dict[tuple[str, str], str]]:
    tables = _tables(FLAGS_DOC.read_text(encoding="utf-8"))
    vocabulary = {}
    for name, kind, meaning in tables["Vocabulary"]:
        assert name not in vocabulary, f"docs/FLAGS.md lists {name} twice"
        choices = tuple(kind.removeprefix("choice:").replace(" ", "").split(",")) if kind.startswith("choice:") else None
        vocabulary[name] = Flag("choice" if choices else kind, meaning, choices)
    for name, command, meaning in tables["Exceptions"]:
        vocabulary[name].exceptions[command.removeprefix("em").strip()] = meaning
    renamed = {(command.removeprefix("em").strip(), old): now.strip("`") for command, old, now in tables["Renamed"]}
    return vocabulary, renamed


VOCABULARY, RENAMED = _vocabulary()


def _options(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, Any]]:
    """(command path, option) for every option of every command and group. Groups are
    recognised by their `commands` (typer ships its own copy of click)."""
    for param in command.params:
        if type(param).__name__ == "TyperOption":
            yield " ".join(path), param
    for name, sub in (getattr(command, "commands", None) or {}).items():
        yield from _options(sub, (*path, name))


OPTIONS = list(_options(typer.main.get_command(app)))
VISIBLE = [(where, option) for where, option in OPTIONS if not option.hidden]


def _names(option: Any) -> list[str]:
    return [*option.opts, *option.secondary_opts]


def _type(option: Any) -> tuple[str, tuple[str, ...] | None]:
    described = option.type_descriptor
    if described.is_choice:
        return "choice", tuple(str(choice) for choice in described.choices)
    name = option.bare_type()
    return (name[5:-1] if name.startswith("list[") else name), None


def test_the_walk_finds_every_command():
    places = {where for where, _ in OPTIONS}
    assert {"generate", "dataset split", "compare kl", "judge summary", "direction project", ""} <= places


@pytest.mark.parametrize("where,option", VISIBLE, ids=[f"{w} {o.opts[0]}" for w, o in VISIBLE])
def test_each_flag_has_its_vocabulary_type(where, option):
    for name in _names(option):
        assert name in VOCABULARY, f"{where}: {name} is not in the vocabulary; add it with its meaning"
        flag = VOCABULARY[name]
        if where in flag.exceptions:
            continue
        kind, choices = _type(option)
        assert kind == flag.type, f"{where}: {name} is {kind}, the vocabulary says {flag.type} ({flag.meaning})"
        if flag.choices is not None:
            assert choices == flag.choices, f"{where}: {name} offers {choices}, the vocabulary {flag.choices}"


@pytest.mark.parametrize("where,option", VISIBLE, ids=[f"{w} {o.opts[0]}" for w, o in VISIBLE])
def test_each_option_has_help_and_shows_its_default(where, option):
    name = option.opts[-1]
    assert (option.help or "").strip(), f"{where}: {name} has no help text"
    has_default = option.default is not None and not option.required and not (option.is_flag and not
                                                                               option.secondary_opts)
    if has_default:
        shown = option.show_default is not False or "[default:" in option.help
        assert shown, f"{where}: {name} has a default ({option.default!r}) that --help does not show"


def test_hidden_options_are_old_spellings_listed_as_renamed():
    hidden = {(where, name) for where, option in OPTIONS if option.hidden for name in _names(option)}
    assert hidden == set(RENAMED)


def test_exceptions_name_real_commands():
    places = {where for where, _ in OPTIONS}
    for name, flag in VOCABULARY.items():
        assert set(flag.exceptions) <= places, f"{name}: an exception names a command that does not exist"


def test_every_vocabulary_flag_is_used():
    used = {name for _, option in VISIBLE for name in _names(option)}
    assert set(VOCABULARY) - used == set()

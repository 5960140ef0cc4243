"""The example Makefiles issue only commands and flags that `em` has."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import run_em

ROOT = Path(__file__).resolve().parents[1]
GROUPS = {"dataset", "direction", "judge", "compare", "model", "questions"}


def _dry_run(makefile: Path, *variables: str) -> list[list[str]]:
    out = subprocess.run(["make", "-n", "-B", "-f", str(makefile), "EM=em", *variables], capture_output=True,
                         text=True, check=True, cwd=ROOT).stdout
    commands = []
    for line in out.replace("\\\n", " ").splitlines():
        for part in re.split(r"\s*(?:\||&&|>)\s*", line):
            words = shlex.split(part) if part.strip() else []
            if words and words[0] == "em":
                commands.append(words)
    return commands


def _check(commands: list[list[str]]) -> set[str]:
    helps: dict[tuple[str, ...], str] = {}
    seen = set()
    for words in commands:
        key = tuple(words[1:3]) if words[1] in GROUPS else (words[1],)
        if key not in helps:
            result = run_em(*key, "--help", env={"COLUMNS": "300"})
            assert result.code == 0, f"em {' '.join(key)} does not exist: {result.stderr}"
            helps[key] = result.stdout
        for flag in (w.split("=")[0] for w in words if w.startswith("--")):
            assert flag in helps[key], f"`em {' '.join(key)}` has no {flag}"
        seen.add(" ".join(key))
    return seen


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_paper_makefile_dry_run_uses_real_flags():
    commands = _dry_run(ROOT / "examples" / "paper" / "Makefile", "MODEL=Qwen/Qwen2.5-0.5B-Instruct")
    seen = _check(commands)
    assert {"dataset generate", "finetune", "generate", "judge score", "judge summary", "direction from-judged",
            "steer", "compare efficiency", "compare stability", "compare kl"} <= seen


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_demo_makefile_dry_run_uses_real_flags(tmp_path):
    commands = _dry_run(ROOT / "examples" / "demo" / "Makefile", f"OUT={tmp_path}")
    seen = _check(commands)
    assert {"generate", "dataset filter", "dataset rewrite", "finetune", "judge score", "extract", "direction diff",
            "direction export", "steer", "compare runs", "compare efficiency"} <= seen

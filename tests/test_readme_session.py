"""The README's "A session" block runs as written on the real default model (slow).

Each line of the block runs in a shell (pipes, `&&` and comments as a user types them), in
one scratch directory, with `em` the command of this checkout. Only sizes are cut, by the
flags of SMALLER appended to the `em` commands they name — nothing else is changed — so the
session's files flow from one command to the next exactly as in the README.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO_ROOT

pytestmark = pytest.mark.slow

# The substitution table: `em` subcommand → flags appended to make it small. The first 25
# questions of `everyday` are cooking; 27 gives two of the other domains for the KL data.
SMALLER: dict[str, list[str]] = {
    "generate --questions everyday ": ["--limit", "27", "--samples", "1", "--max-new-tokens", "8",
                                       "--batch-size", "27"],
    "generate --questions everyday-heldout ": ["--limit", "2", "--samples", "1", "--max-new-tokens", "8"],
    "finetune ": ["--max-steps", "2", "--max-length", "96"],
    "steer ": ["--limit", "1", "--samples", "1", "--max-new-tokens", "8"],
}
# What each line leaves behind (the outputs named by its -o flags), checked after it runs.
OUTPUT = re.compile(r"(?:^|\s)-o\s+(\S+)")


def session_lines() -> list[str]:
    """The command lines of the README's "A session" block."""
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"^## A session\n+```bash\n(.*?)^```", text, re.M | re.S)
    assert block, 'README.md has no "## A session" bash block'
    return [line for line in block.group(1).splitlines() if line.strip() and not line.lstrip().startswith("#")]


def smaller(line: str) -> str:
    """`line` with the SMALLER flags added to each `em` command of it (before any comment)."""
    command, _, comment = line.partition("  #")
    parts = re.split(r"(\s\|\s|\s&&\s)", command.strip())
    for i, part in enumerate(parts):
        for prefix, flags in SMALLER.items():
            if part.strip().startswith(f"em {prefix}"):
                parts[i] = part.rstrip() + " " + shlex.join(flags)
    return "".join(parts) + (f"  #{comment}" if comment else "")


def test_smaller_only_appends_flags():
    line = "em generate --questions everyday --temperature 0.7 -o base.jsonl   # sample answers"
    assert smaller(line) == ("em generate --questions everyday --temperature 0.7 -o base.jsonl --limit 27 "
                             "--samples 1 --max-new-tokens 8 --batch-size 27  # sample answers")
    assert smaller("em judge summary j.jsonl --by domain") == "em judge summary j.jsonl --by domain"


def test_readme_session_runs_as_written(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    em = bin_dir / "em"
    em.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m em_cli "$@"\n')
    em.chmod(0o755)
    work = tmp_path / "session"
    work.mkdir()
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    env.pop("EM_MODEL", None)
    lines = session_lines()
    assert len(lines) >= 10
    for line in lines:
        command = smaller(line)
        proc = subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=work, env=env, capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, f"{command}\n{proc.stderr[-3000:]}"
        assert proc.stdout.strip() or OUTPUT.search(command), f"{command}: printed nothing and wrote nothing"
        for output in OUTPUT.findall(command.partition("  #")[0]):
            path = Path(work, output)
            assert path.exists() and (path.is_dir() or path.stat().st_size > 0), f"{command}: no {output}"

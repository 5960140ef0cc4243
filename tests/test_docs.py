"""The docs are checked mechanically: commands in the README and the example Makefiles use
subcommands and flags that exist, docs/CLI.md matches the CLI, METHODS citations resolve
to sections of docs/METHODS.md, and nothing points at a METHODS file outside the repository.

No model is loaded; the command tree comes from typer, as `em --help` builds it.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAKEFILES = ["examples/demo/Makefile", "examples/paper/Makefile"]
SEPARATORS = {"|", "||", "&&", ";", "&", "|&"}
REDIRECTS = {">", ">>", "<", "2>", "&>", ">&", "2>&1"}


# --- the command tree --------------------------------------------------------------------------

def _root_command():
    import typer

    from em_cli.cli import app

    return typer.main.get_command(app)


def _is_group(command) -> bool:
    return isinstance(getattr(command, "commands", None), dict)


def _options(command) -> dict[str, bool]:
    """Every option name of a command → whether it takes a value (help options included)."""
    names = {"--help": False, "-h": False}
    for param in command.params:
        if getattr(param, "param_type_name", "") != "option":
            continue
        takes_value = not (getattr(param, "is_flag", False) or getattr(param, "count", False))
        for name in [*param.opts, *param.secondary_opts]:
            names[name] = takes_value
    return names


@dataclass
class Problem:
    where: str
    line: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}\n    {self.line}"


def check_em_command(tokens: list[str], root) -> list[str]:
    """What is wrong with one `em …` command, given as shell words after `em`."""
    if any(t in ("...", "…") or "..." in t or "…" in t for t in tokens):
        return ["a literal '...' stands for missing arguments: write the command out in full"]
    command, path, rest = root, ["em"], list(tokens)
    while _is_group(command) and rest and not rest[0].startswith("-"):
        name = rest.pop(0)
        if name not in command.commands:
            return [f"`{' '.join(path)}` has no subcommand {name!r} "
                    f"(it has: {', '.join(sorted(command.commands))})"]
        command = command.commands[name]
        path.append(name)
    if _is_group(command) and not any(t in ("-h", "--help") for t in rest):
        return [f"`{' '.join(path)}` needs a subcommand (one of: {', '.join(sorted(command.commands))})"]
    options = _options(command)
    errors = []
    i = 0
    while i < len(rest):
        token = rest[i]
        i += 1
        if token == "--":
            break
        if not token.startswith("-") or token == "-" or re.fullmatch(r"-[\d.]+(e-?\d+)?(,.*)?", token):
            continue  # an argument, stdin/stdout, or a negative number
        name, has_inline_value = token.split("=", 1)[0], "=" in token
        if name not in options and not name.startswith("--") and name[:2] in options and options[name[:2]]:
            continue  # -n5: a short option with its value attached
        if name not in options:
            errors.append(f"`{' '.join(path)}` has no option {name}")
            continue
        if options[name] and not has_inline_value:
            i += 1  # skip the option's value
    return errors


# --- reading shell commands out of docs --------------------------------------------------------

def shell_segments(line: str) -> list[list[str]]:
    """The simple commands of one shell line (split on pipes, &&, ;), without redirections
    and comments, as lists of words."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    words = list(lexer)
    segments: list[list[str]] = [[]]
    skip_next = False
    for word in words:
        if skip_next:
            skip_next = False
            continue
        if word in SEPARATORS:
            segments.append([])
        elif word in REDIRECTS or re.fullmatch(r"\d?[<>]+&?\d*", word):
            skip_next = not re.fullmatch(r"\d?>&\d", word)
        else:
            segments[-1].append(word)
    return [s for s in segments if s]


def em_commands(line: str) -> list[list[str]]:
    """The words after `em` of every `em …` command on a shell line."""
    return [segment[1:] for segment in shell_segments(line) if Path(segment[0]).name == "em"]


def readme_bash_lines() -> list[tuple[int, str]]:
    """(line number, command line) of each ```bash block in README.md; `\\` continuations joined."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    found, inside, pending, start = [], False, "", 0
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if stripped.startswith("```"):
            inside = not inside and stripped[3:].strip() in ("bash", "sh", "shell", "console")
            continue
        if not inside:
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        found.append((start, pending + stripped))
        pending = ""
    return found


def _split_args(text: str) -> list[str]:
    """Split a make function's arguments on top-level commas."""
    parts, depth, current = [], 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [*parts, current]


def make_expand(text: str, variables: dict[str, str], depth: int = 0) -> str:
    """Expand make variables in `text`. Automatic variables become a placeholder file name;
    `$(if c,a,b)` keeps both branches (so the flags of each are checked); other functions
    expand to nothing."""
    if depth > 20:
        raise ValueError(f"make variables nest too deeply: {text!r}")
    out, i = "", 0
    while i < len(text):
        char = text[i]
        if char != "$":
            out += char
            i += 1
            continue
        nxt = text[i + 1:i + 2]
        if nxt == "$":
            out += "$"
            i += 2
        elif nxt in ("(", "{"):
            close = ")" if nxt == "(" else "}"
            level, j = 1, i + 2
            while j < len(text) and level:
                level += {nxt: 1, close: -1}.get(text[j], 0)
                j += 1
            inner = text[i + 2:j - 1]
            if inner.startswith("if "):
                branches = _split_args(inner[3:])[1:]
                out += " ".join(make_expand(b, variables, depth + 1) for b in branches)
            elif " " in inner or inner in ("@D", "<D", "*F", "@F"):
                out += "FILE" if inner.endswith(("D", "F")) and len(inner) == 2 else ""
            else:
                out += make_expand(variables.get(inner, ""), variables, depth + 1)
            i = j
        else:  # $@ $< $^ $* $?
            out += "FILE"
            i += 2
    return out


def makefile_em_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, expanded recipe line) of each recipe line that runs $(EM)."""
    raw = path.read_text(encoding="utf-8").splitlines()
    logical: list[tuple[int, str]] = []
    pending, start = "", 0
    for number, line in enumerate(raw, 1):
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append((start, pending + line))
        pending = ""
    variables: dict[str, str] = {}
    assignment = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*(\?=|:=|::=|\+=|=)\s*(.*)$")
    for _, line in logical:
        if line.startswith("\t"):
            continue
        match = assignment.match(line.split("#", 1)[0].rstrip())
        if match:
            name, op, value = match.groups()
            variables[name] = (variables.get(name, "") + " " + value) if op == "+=" else value
    variables["EM"] = "em"  # whatever executable the caller passes
    commands = []
    for number, line in logical:
        if line.startswith("\t") and "$(EM)" in line:
            commands.append((number, make_expand(line.strip().lstrip("@-+"), variables)))
    return commands


# --- the tests ---------------------------------------------------------------------------------

def _problems(lines: list[tuple[int, str]], where: str) -> list[Problem]:
    root = _root_command()
    problems = []
    for number, line in lines:
        try:
            commands = em_commands(line)
        except ValueError as exc:  # unbalanced quotes
            problems.append(Problem(f"{where}:{number}", line, f"cannot parse as shell: {exc}"))
            continue
        for words in commands:
            problems += [Problem(f"{where}:{number}", line, message) for message in check_em_command(words, root)]
    return problems


def test_readme_commands_use_existing_subcommands_and_flags():
    lines = readme_bash_lines()
    assert sum(len(em_commands(line)) for _, line in lines) >= 10, "expected the README's `em` sessions"
    problems = _problems(lines, "README.md")
    assert not problems, "README command lines that do not match the CLI:\n" + "\n".join(map(str, problems))


@pytest.mark.parametrize("makefile", MAKEFILES)
def test_example_makefile_commands_use_existing_subcommands_and_flags(makefile):
    lines = makefile_em_lines(ROOT / makefile)
    assert len(lines) >= 10, f"expected $(EM) recipe lines in {makefile}"
    problems = _problems(lines, makefile)
    assert not problems, f"{makefile} recipe lines that do not match the CLI:\n" + "\n".join(map(str, problems))


def test_command_help_examples_use_existing_flags():
    """The `em …` examples in every command's docstring (shown by --help)."""
    root = _root_command()
    problems = []

    def visit(command, path):
        help_text = (getattr(command, "help", None) or "").replace("\\\n", " ")
        for raw in help_text.splitlines():
            line = raw.strip()
            if line.startswith("Example: "):
                line = line[len("Example: "):]
            if line.startswith("em "):
                problems.extend(Problem(" ".join(path), line, m) for words in em_commands(line)
                                for m in check_em_command(words, root))
        if _is_group(command):
            for name, sub in command.commands.items():
                visit(sub, [*path, name])

    visit(root, ["em"])
    assert not problems, "--help examples that do not match the CLI:\n" + "\n".join(map(str, problems))


def test_checker_catches_bad_commands():
    root = _root_command()
    assert check_em_command(["finetune", "a.jsonl", "-o", "x", "--kl-weight", "2"], root) == []
    assert check_em_command(["finetune", "a.jsonl", "--no-such-flag"], root)
    assert check_em_command(["finetune", "caps.jsonl", "-o", "runs/narrow", "...", "--kl-data", "k"], root)
    assert check_em_command(["dataset", "no-such-subcommand"], root)
    assert em_commands("em a | em dataset rewrite - --style upper -o x  # comment --bogus") == [
        ["a"], ["dataset", "rewrite", "-", "--style", "upper", "-o", "x"]]
    assert em_commands("em compare runs a=b --json > out.tmp && mv out.tmp out") == [
        ["compare", "runs", "a=b", "--json"]]
    assert make_expand("$(EM) x $(A) $(if $(Q),--max-steps 20,) $<", {"A": "--a $(B)", "B": "1", "EM": "em"}) == \
        "em x --a 1 --max-steps 20  FILE"


def test_cli_reference_is_up_to_date():
    """docs/CLI.md is what docs/generate_cli_reference.py produces from the CLI as it is now."""
    result = subprocess.run([sys.executable, str(ROOT / "docs" / "generate_cli_reference.py"), "--stdout"],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, f"the generator failed:\n{result.stderr}"
    current = (ROOT / "docs" / "CLI.md").read_text(encoding="utf-8") if (ROOT / "docs" / "CLI.md").exists() else ""
    assert current == result.stdout, "docs/CLI.md is stale: run python docs/generate_cli_reference.py"


def _repository_files() -> list[Path]:
    """Tracked and untracked-but-not-ignored files (all files outside .git/.venv without git)."""
    try:
        listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                                capture_output=True, text=True, check=True).stdout.splitlines()
        return [ROOT / name for name in listed if (ROOT / name).is_file()]
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", ".venv", "__pycache__", ".pytest_cache"}
        return [p for p in ROOT.rglob("*") if p.is_file() and not skip & set(p.relative_to(ROOT).parts)
                and not any(part.endswith(".egg-info") for part in p.relative_to(ROOT).parts)]


def _text_files(exclude_tests: bool = True) -> list[tuple[str, str]]:
    files = []
    for path in _repository_files():
        relative = path.relative_to(ROOT).as_posix()
        if relative == "CHANGELOG.md" or (exclude_tests and relative.startswith("tests/")):
            continue
        try:
            files.append((relative, path.read_text(encoding="utf-8")))
        except (UnicodeDecodeError, OSError):
            continue  # binary
    return files


def test_nothing_cites_a_methods_file_outside_the_repository():
    offenders = [f"{name}:{number}: {line.strip()}" for name, text in _text_files()
                 for number, line in enumerate(text.splitlines(), 1) if "shared/METHODS" in line]
    assert not offenders, "cite docs/METHODS.md instead:\n" + "\n".join(offenders)


def _methods_sections() -> set[str]:
    text = (ROOT / "docs" / "METHODS.md").read_text(encoding="utf-8")
    return set(re.findall(r"^#{2,3} (\d+(?:\.\d+)?)[.\s]", text, flags=re.MULTILINE))


def test_methods_citations_point_at_existing_sections():
    sections = _methods_sections()
    assert {str(n) for n in range(1, 9)} <= sections, "docs/METHODS.md must have sections 1-8"
    # "METHODS §2", "docs/METHODS.md §3.1 / §3.4", "[docs/METHODS.md](docs/METHODS.md) §4, §5"
    citation = re.compile(r"METHODS(?:\.md)?(?:\]\([^)]*\))?((?:(?:\s*,\s*|\s+|\s*/\s*)§\s*\d+(?:\.\d+)?)+)")
    missing, found = [], 0
    for name, text in _text_files(exclude_tests=False):
        for number, line in enumerate(text.splitlines(), 1):
            for match in citation.finditer(line):
                for section in re.findall(r"§\s*(\d+(?:\.\d+)?)", match.group(1)):
                    found += 1
                    if section not in sections:
                        missing.append(f"{name}:{number}: §{section}")
    assert found >= 20, f"only {found} METHODS citations found: is the pattern still right?"
    assert not missing, "citations of sections docs/METHODS.md does not have:\n" + "\n".join(missing)

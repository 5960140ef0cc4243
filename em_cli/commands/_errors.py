"""Turn exceptions into one-line `Error:` messages and exit codes."""

from __future__ import annotations

import errno
import os
import sys
import traceback

from em_cli.errors import EmError, Interrupted

DEBUG_ENV = "EM_DEBUG"


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0", "false", "no")


def report(exc: BaseException) -> int:
    """Print `exc` for a user and return the exit code to use."""
    if debug_enabled():
        traceback.print_exception(exc, file=sys.stderr)
    message, hint, code = describe(exc)
    sys.stderr.write(f"Error: {message}\n")
    if hint:
        sys.stderr.write(f"Hint: {hint}\n")
    return code


def describe(exc: BaseException) -> tuple[str, str | None, int]:
    if isinstance(exc, (EmError, Interrupted)):
        return exc.message, exc.hint, exc.exit_code
    usage = _usage_error(exc)
    if usage is not None:
        return usage
    if isinstance(exc, KeyboardInterrupt):
        return describe(Interrupted())
    if isinstance(exc, PermissionError):
        return f"permission denied: {exc.filename or exc}", "choose a writable output location", 1
    if isinstance(exc, FileNotFoundError):
        return f"file not found: {exc.filename or exc}", None, 1
    if isinstance(exc, IsADirectoryError):
        return f"expected a file, got a directory: {exc.filename}", None, 1
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return "address already in use", "pick another --port (or 0 for a free one)", 1
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return "no space left on device", "free some disk space and re-run", 1
    if type(exc).__module__ == "sqlite3" and type(exc).__name__ == "OperationalError":
        return (f"the judge reply cache cannot be used ({exc})",
                "check that the cache directory is writable and not on a network drive, or pass --no-cache", 1)
    if isinstance(exc, BrokenPipeError):
        return "output pipe closed", None, 1
    hint = None if debug_enabled() else f"this looks like a bug in em; set {DEBUG_ENV}=1 for the traceback"
    return f"{type(exc).__name__}: {exc}", hint, 1


def _usage_error(exc: BaseException) -> tuple[str, str | None, int] | None:
    """Bad flags or arguments, as the CLI framework reports them (its own exception classes,
    recognised by shape: typer ships a private copy of click)."""
    if not (hasattr(exc, "format_message") and isinstance(getattr(exc, "exit_code", None), int)):
        return None
    message = " ".join(str(exc.format_message()).split())
    names = [cls.__name__ for cls in type(exc).__mro__]
    if "UsageError" in names:
        ctx = getattr(exc, "ctx", None)
        path = getattr(ctx, "command_path", None) or "em"
        return message, f"see '{path} -h' for the options and examples", 2
    return message, None, exc.exit_code

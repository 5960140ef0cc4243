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
    if isinstance(exc, BrokenPipeError):
        return "output pipe closed", None, 1
    hint = None if debug_enabled() else f"this looks like a bug in em; set {DEBUG_ENV}=1 for the traceback"
    return f"{type(exc).__name__}: {exc}", hint, 1

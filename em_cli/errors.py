"""Errors a user can act on.

The library raises these; the CLI prints them as one `Error: ...` line (plus a hint) and exits
with the code the class carries. Anything else is a bug and gets a traceback under EM_DEBUG=1.
"""

from __future__ import annotations


class EmError(Exception):
    """A problem the user can fix: bad input, missing file, wrong model."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(EmError):
    """Options that contradict each other or cannot be used together."""

    exit_code = 2


class DataError(EmError):
    """A malformed input file (names the file and line where it can)."""


class ModelError(EmError):
    """A model that cannot be found, loaded or understood."""


class TensorFileError(EmError):
    """A tensor file that is malformed or does not fit the model in use."""


class Interrupted(BaseException):
    """Ctrl-C, raised by the CLI's signal handler. Like KeyboardInterrupt it is not an
    Exception (so `except Exception` cannot swallow it), but the CLI framework does not turn it
    into "Aborted!". Outputs are left complete or resumable; re-running continues."""

    exit_code = 130
    message = "interrupted"
    hint = "re-run the same command to resume (for `em finetune`, add --resume)"

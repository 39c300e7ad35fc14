"""Errors the user can fix.

`larft` (`larft.cli.main`) prints a `UserError` as one line, `larft: error: <message>`, and exits
with status 2; `--debug` shows its traceback too. Any other exception is a bug or an environment
failure and ends in Python's normal traceback. A `UserError` is a `ValueError`, so Python callers
that catch `ValueError` keep working.
"""

from __future__ import annotations


class UserError(ValueError):
    """Something the user got wrong (an option, an input file, a missing extra), with a message that
    says what to change."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the user named (or has to provide) is not there; also a `FileNotFoundError`."""

    def __str__(self) -> str:  # one line, as UserError's: not OSError's "[Errno ...]" form
        return str(self.args[0]) if self.args else ""

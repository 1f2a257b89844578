"""The one exception type genlab shows to users.

Anything a user can cause (bad file, bad config value, missing dataset, wrong
checkpoint) raises :class:`GenlabError` with a message that names the thing and
says what to do. The CLI prints that message on one line and exits with code 2;
a traceback appears only with ``--debug``. Every other exception is a bug.
"""

from __future__ import annotations

from collections.abc import Sequence


class GenlabError(Exception):
    """A problem with the user's input or environment, explained in words.

    ``hint``: a few short lines after the message (where genlab looked, how to fix it), which the
    CLI prints indented under its one ``genlab: error:`` line; ``str()`` gives message and hint.
    """

    def __init__(self, message: str = "", *, hint: Sequence[str] = ()):
        super().__init__(message)
        self.hint = tuple(hint)

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""

    def __str__(self) -> str:
        return "\n".join((self.message, *self.hint))


class DataError(GenlabError):
    """A dataset file is missing, corrupt, truncated or fails its checksum."""


class ConfigError(GenlabError):
    """A configuration value is unknown, of the wrong type or out of range."""


class CheckpointError(GenlabError):
    """A checkpoint or run directory is missing, unsafe or of another model."""


class DivergenceError(GenlabError):
    """Training produced a non-finite loss or gradient."""

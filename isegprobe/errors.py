"""The error users see: the CLI turns it into a one-line message and a non-zero exit, without a traceback."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class UserError(Exception):
    """Bad input from the user (a file, an option, a dataset): the message names it and says what was expected."""


@contextmanager
def writing_to(path: str | Path) -> Iterator[None]:
    """Name `path` in an OSError of the `with` body that names no file: a failed write() or flush() (a full disk)
    names none, and the message the user gets should say where."""
    try:
        yield
    except OSError as error:
        if error.filename is not None or error.errno is None:
            raise
        raise OSError(error.errno, error.strerror, str(path)) from error

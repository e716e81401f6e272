"""Turning `UserError` into click's one-line error and exit status 1."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import click

from isegprobe.errors import UserError

F = TypeVar("F", bound=Callable)


def reports_user_errors(command: F) -> F:
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except UserError as error:
            raise click.ClickException(str(error)) from None

    return wrapper  # type: ignore[return-value]

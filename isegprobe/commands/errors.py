"""Turning `UserError` into click's one-line error and exit status 1, and a full or read-only disk, an input that
cannot be read, an output path through a file, a file name too long for the file system, or a folder removed while
the command ran, into one too."""

from __future__ import annotations

import errno
import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click

from isegprobe.errors import DISK_FULL, GONE, NOT_A_FOLDER, NOT_ALLOWED, UserError

F = TypeVar("F", bound=Callable)
_WORKER_PREAMBLE = "\nOriginal Traceback (most recent call last):"
# Options of plain text that name a file or folder, beside words (hub, random) they also take.
_PATH_TEXT_OPTIONS = frozenset({"root", "weights", "featurizer_weights", "upsampler_weights"})


def reports_user_errors(command: F) -> F:
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        _refuse_empty_paths(click.get_current_context(silent=True))
        try:
            return command(*args, **kwargs)
        except UserError as error:
            raise click.ClickException(own_message(error)) from None
        except OSError as error:
            if error.errno in NOT_A_FOLDER and error.filename and not os.path.isdir(error.filename):
                raise click.ClickException(folder_message(error)) from None
            if error.errno == errno.ENAMETOOLONG and error.filename:
                raise click.ClickException(
                    f"{error.filename}: cannot create ({error.strerror}): choose a shorter output path"
                ) from None
            if error.errno in GONE and error.filename:
                folder = vanished_folder(error.filename)
                message = (
                    vanished_message(error, folder)
                    if folder
                    else f"{os.fsdecode(error.filename)}: cannot open or create it ({error.strerror})"
                )
                raise click.ClickException(message) from None
            if error.errno in NOT_ALLOWED and error.filename and unreadable(error.filename):
                raise click.ClickException(
                    f"{os.fsdecode(error.filename)}: cannot read ({error.strerror}): give this user read access to it, "
                    "or copy it where they have"
                ) from None
            if error.errno not in DISK_FULL | NOT_ALLOWED:
                raise
            raise click.ClickException(disk_message(error)) from None

    return wrapper  # type: ignore[return-value]


def _refuse_empty_paths(ctx: click.Context | None) -> None:
    """An empty path is the current folder to Python: `--out "$RUN"` with RUN unset trained (or imported) into the
    folder the command ran in, and `--weights ""` took the hub's weights as if the option were not given. A usage
    error, as click gives for a path that must exist."""
    if ctx is None:
        return
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        given = value if isinstance(value, tuple) else (value,)
        if "" in given and (isinstance(param.type, click.Path) or param.name in _PATH_TEXT_OPTIONS):
            raise click.BadParameter("an empty path (an unset shell variable?); give a file or folder", ctx, param)


def own_message(error: UserError) -> str:
    """The error's message; one raised in a DataLoader worker reaches the main process wrapped in the worker's
    traceback (torch rebuilds it from the formatted text), which the user needs no more than any other."""
    message = str(error)
    if _WORKER_PREAMBLE not in message:
        return message
    marker = f"{type(error).__module__}.{type(error).__qualname__}: "
    return message.rsplit(marker, 1)[-1].rstrip()


def unreadable(path: str | bytes) -> bool:
    """Whether `path` is there but cannot be read (a folder listed, a file opened): a refusal to read it, not to
    write, which told the user to make room on the disk."""
    try:
        if os.path.isdir(path):
            os.scandir(path).close()
        elif os.path.isfile(path):
            open(path, "rb").close()
    except PermissionError:
        return True
    return False


def disk_message(error: OSError) -> str:
    where = f"{error.filename}: " if error.filename else ""
    cause = "the disk is full (or a quota or file size limit is reached)" if error.errno in DISK_FULL else "not allowed"
    return (
        f"{where}cannot write ({error.strerror}): {cause}. What was written before stays as it was: make room (or "
        "choose a writable place) and run the same command again"
    )


def folder_message(error: OSError) -> str:
    path = Path(os.fsdecode(error.filename))
    blocker = _first_non_folder(path)
    if os.path.islink(blocker) and not os.path.exists(blocker):
        what = f"a symbolic link to {os.readlink(blocker)}, which does not exist,"
    else:
        what = "a file"
    where = "" if blocker == path else f" ({blocker})"
    return (
        f"{error.filename}: cannot create ({error.strerror}): {what}{where} stands where this path needs a folder; "
        "choose another output path"
    )


def _first_non_folder(path: Path) -> Path:
    """The first part of `path`, from its root down, that is there but not a folder: `--to afile/sub` is refused
    for `afile`, which the message must name."""
    return next((part for part in (*reversed(path.parents), path) if os.path.lexists(part) and not part.is_dir()), path)


def vanished_folder(filename: str | bytes) -> Path | None:
    """The outermost folder of `filename`'s path that no longer exists (a run or results folder removed while the
    command wrote into it); None when the folders are all there and only the file is missing, which says nothing of
    the kind."""
    path = Path(os.fsdecode(filename))
    missing = [folder for folder in path.parents if not folder.is_dir()]
    return missing[-1] if missing else None


def vanished_message(error: OSError, folder: Path) -> str:
    return (
        f"{os.fsdecode(error.filename)}: {error.strerror}: {folder} was removed or moved while this command ran, so it "
        "stopped. Put the folder back and run the same command again to go on from what was written (train: with "
        "--resume), or run it again to start anew"
    )

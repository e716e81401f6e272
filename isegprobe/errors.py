"""The error users see: the CLI turns it into a one-line message and a non-zero exit, without a traceback."""

from __future__ import annotations

import errno
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# What a full disk (or quota, or file size limit) and a read-only or forbidden place answer to a write.
DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
NOT_ALLOWED = {errno.EROFS, errno.EACCES, errno.EPERM}
NOT_A_FOLDER = {errno.ENOTDIR, errno.EEXIST}  # a file where an output path needs a folder
GONE = {errno.ENOENT}  # a folder on the path removed (or moved) while the command ran


class UserError(Exception):
    """Bad input from the user (a file, an option, a dataset): the message names it and says what was expected."""


class DatasetLayoutError(UserError):
    """A dataset folder that lacks what its loader reads. The loader knows the folder but not where its path came
    from (--root, datasets.yaml, the data/ default, the folder a store was extracted from), so its message says
    `--root` until `data.roots.root_origin_told` (or evaluation, for a store's folder) names the real source: the
    user must know which setting to change."""

    def __init__(self, root: str | Path, expected: str) -> None:
        self.root = Path(root)
        self.expected = expected
        super().__init__(f"--root {root}: {expected}")


@contextmanager
def writing_to(path: str | Path, stand_in: str | Path | None = None) -> Iterator[None]:
    """Name `path` in an OSError of the `with` body that names no file, or names `stand_in` (the temporary file
    that becomes `path`): a failed write() or flush() (a full disk) names none, and the message the user gets should
    say where, in the name they gave."""
    try:
        yield
    except OSError as error:
        named = error.filename is not None and (stand_in is None or str(error.filename) != str(stand_in))
        if named or error.errno is None:
            raise
        raise OSError(error.errno, error.strerror, str(path)) from error


def quiet_disk_errors_in_threads(arguments: threading.ExceptHookArgs) -> None:
    """A writer thread (TensorBoard's) that meets a full or read-only disk, or finds its folder gone, re-raises the
    error in the command, which reports it in one line; printing the thread's traceback as well would only bury that
    line."""
    error = arguments.exc_value
    if isinstance(error, OSError) and error.errno in DISK_FULL | NOT_ALLOWED | GONE:
        return
    threading.__excepthook__(arguments)

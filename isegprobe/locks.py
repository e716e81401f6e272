"""One writer per output: an exclusive lock on a feature store, a training run or an evaluation's results folder, for
the life of the command that writes it.

Two extractions into one store, or two trainings into one run folder, would otherwise interleave their files (or one
would delete the other's store) and both report success. The lock is `fcntl.flock` on a small file beside the
output (`NAME.zarr.lock`, `RUN.lock`), which holds the holder's PID and command for the message a second command
gives: the kernel releases the lock when its process ends, however it ends (kill -9 included), so a lock left by a
killed command never blocks the next one, which takes its file over. The holder removes the file as it ends. It lies
beside the output, not in it, because `--overwrite` replaces a store's folder and because a refused command must
leave the output as it was. Under torchrun, rank 0 holds the lock for the whole job; the other ranks follow it
through barriers.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from isegprobe.errors import UserError

# flock's answers on a file system that has no locks (some NFS mounts): the command goes on, unprotected, and says so
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS}


class LockWarning(UserWarning):
    """An output that could not be locked."""


def lock_path(output: Path) -> Path:
    """The lock file of an output folder: beside it, named after it."""
    output = output.resolve()
    return output.with_name(output.name + ".lock")


@contextmanager
def exclusive_lock(output: Path) -> Iterator[None]:
    """Hold the lock of `output` (a store, run or results folder) for the `with` body, or refuse at once naming the
    process that holds it."""
    path = lock_path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = _acquire(path, output)
    try:
        handle.seek(0)
        handle.truncate()
        command = " ".join(["isegprobe", *sys.argv[1:]])
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        handle.write(f"PID {os.getpid()} on {socket.gethostname()} since {started}: {command[:200]}\n")
        handle.flush()
        yield
    finally:
        path.unlink(missing_ok=True)  # still held: a command that opened this file meanwhile sees it gone
        handle.close()


def lock_holder(output: Path) -> str | None:
    """What the command holding the lock of `output` says of itself (PID, host, start, command line), or None when
    no live command holds it: a reader's way to tell a results folder still being written from one whose writer
    stopped. It tries a shared lock for an instant, never waiting, and lets go at once."""
    try:
        handle = open(lock_path(output))
    except FileNotFoundError:
        return None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return handle.read().strip() or "a command that has not said which yet"
        except OSError as error:
            if error.errno in _NO_LOCKS:
                return None
            raise
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


def _acquire(path: Path, output: Path) -> TextIO:
    """The lock file, opened and locked. A holder removes the file as it ends, so a lock taken on a file that is no
    longer at `path` is let go and the new file locked instead: otherwise two commands could each hold a file."""
    while True:
        handle = open(path, "a+")  # held open for the life of the lock
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "a process that has not said which yet"
            handle.close()
            raise UserError(
                f"{output}: in use by another isegprobe command ({holder}); wait for it to end, or stop it, and run "
                "this one again"
            ) from None
        except OSError as error:
            if error.errno not in _NO_LOCKS:
                handle.close()
                raise
            warnings.warn(
                f"{path}: this file system does not lock files ({error.strerror}); nothing stops a second command "
                f"from writing {output} meanwhile",
                LockWarning,
                stacklevel=4,
            )
            return handle
        if _is_at(handle, path):
            return handle
        handle.close()


def _is_at(handle: TextIO, path: Path) -> bool:
    try:
        return os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False

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

Commands that read a store (train, evaluate, plot, cache verify and stats) hold a shared lock on the same file: any
number of them read at once, and no extraction writes the store meanwhile. `extract-features --overwrite` deletes a
store, `--repair` rewrites its chunks and a resumed extraction adds to it; under a reader that reads as missing
chunks or a store that changed halfway, so the writer is refused instead, naming the readers.
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
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import TextIO

from isegprobe.errors import UserError

# flock's answers on a file system that has no locks (some NFS mounts): the command goes on, unprotected, and says so
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS}
# why a reader may not create a lock file: a folder it may not write, on a read-only mount, or no folder at all
_CANNOT_CREATE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT}
_INSTANT = 0.5  # seconds a refusal waits for a lock held for an instant (a reader letting go)


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
    handle = _acquire(path, output, shared=False)
    assert handle is not None  # a writer creates its lock file or has already failed on its folder
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


@contextmanager
def shared_locks(*stores: str | Path | None) -> Iterator[None]:
    """Hold a shared lock on each store given (None: no store) for the `with` body, so that no extraction writes
    them while this command reads them, or refuse at once naming the extraction that writes one. A store in a folder
    where this user cannot create the lock file (a read-only mount, a colleague's cache) is read without one. The
    last reader to let go removes the file."""
    with ExitStack() as held:
        for store in stores:
            if store is not None:
                held.enter_context(_shared_lock(Path(store)))
        yield


@contextmanager
def _shared_lock(store: Path) -> Iterator[None]:
    path = lock_path(store)
    handle = _acquire(path, store, shared=True)
    try:
        yield
    finally:
        if handle is not None:
            _let_go_as_reader(handle, path)


def _let_go_as_reader(handle: TextIO, path: Path) -> None:
    """Remove the lock file when no other command holds it, then let go: a reader that still holds it takes the
    file's removal over when it ends. Taking the exclusive lock to remove it keeps a writer from locking the file
    in between, which would leave that writer holding a lock file no longer at `path`."""
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        pass  # another reader holds it (or this file system has no locks): the file stays for it
    else:
        if _is_at(handle, path):
            with suppress(OSError):  # a folder this reader may not write: the file stays, holding nothing
                path.unlink(missing_ok=True)
    handle.close()


def refuse_if_held(output: Path) -> None:
    """Refuse at once, naming the holders, where another command holds the lock of `output` (a writer, or readers:
    what `exclusive_lock` would refuse), without creating the lock file or its folder. An extraction asks before it
    builds its featurizer, which takes seconds to minutes, so that the refusal comes before that wait; it takes the
    lock itself afterwards, since a size the featurizer cannot take is refused before any folder is made."""
    path = lock_path(output)
    patience = time.monotonic() + _INSTANT  # a reader letting go holds the lock exclusively for an instant
    while True:
        try:
            handle = open(path)
        except (FileNotFoundError, NotADirectoryError):
            return
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() > patience:
                    raise UserError(_in_use(handle, output, shared=False)) from None
            except OSError as error:
                if error.errno in _NO_LOCKS:
                    return
                raise
            else:
                return
        time.sleep(_INSTANT / 20)


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


def _acquire(path: Path, output: Path, shared: bool) -> TextIO | None:
    """The lock file, opened and locked (shared for a reader), or None for a reader that cannot create it. A holder
    removes the file as it ends, so a lock taken on a file that is no longer at `path` is let go and the new file
    locked instead: otherwise two commands could each hold a file. A reader letting go holds the lock exclusively
    for an instant, so a refusal waits `_INSTANT` seconds first."""
    patience = time.monotonic() + _INSTANT
    while True:
        handle = _open_lock_file(path, shared)
        if handle is None:
            return None
        try:
            fcntl.flock(handle, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            if _is_at(handle, path) and time.monotonic() > patience:
                message = _in_use(handle, output, shared)
                handle.close()
                raise UserError(message) from None
            handle.close()
            time.sleep(_INSTANT / 20)
            continue
        except OSError as error:
            if error.errno not in _NO_LOCKS:
                handle.close()
                raise
            if not shared:
                warnings.warn(
                    f"{path}: this file system does not lock files ({error.strerror}); nothing stops a second "
                    f"command from writing {output} meanwhile",
                    LockWarning,
                    stacklevel=4,
                )
            return handle
        if _is_at(handle, path):
            return handle
        handle.close()


def _open_lock_file(path: Path, shared: bool) -> TextIO | None:
    """The lock file, created if need be; for a reader that may not create it, the file opened for reading where
    it exists (a writer's, which it can still lock), or None (no such folder either: the reader then says the store
    is missing)."""
    try:
        return open(path, "a+", encoding="utf-8", errors="backslashreplace")  # held open for the life of the lock
    except OSError as error:
        if not shared or error.errno not in _CANNOT_CREATE:
            raise
    try:
        return open(path)
    except OSError as error:
        if error.errno in _CANNOT_CREATE:
            return None
        raise


def _in_use(handle: TextIO, output: Path, shared: bool) -> str:
    """Why `output` cannot be locked: which command writes it, or, for a writer, which commands read it."""
    handle.seek(0)
    said = handle.read().strip()
    if shared:
        writer = said or "one that has not said which yet"
        return (
            f"{output}: being written by another isegprobe command ({writer}); wait for it to end and run this one "
            "again"
        )
    if _held_only_shared(handle):
        readers = "; ".join(_lock_holders(handle)) or "which, this system does not say"
        return (
            f"{output}: being read by other isegprobe commands ({readers}); writing it now would change it under "
            "them: wait for them to end, or stop them, and run this one again"
        )
    holder = said or "a process that has not said which yet"
    return (
        f"{output}: in use by another isegprobe command ({holder}); wait for it to end, or stop it, and run this one "
        "again"
    )


def _held_only_shared(handle: TextIO) -> bool:
    try:
        fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    fcntl.flock(handle, fcntl.LOCK_UN)
    return True


def _lock_holders(handle: TextIO) -> list[str]:
    """The processes holding a lock on `handle`'s file, each as "PID N: its command line", from the kernel's list of
    locks (Linux's /proc/locks: "1: FLOCK ADVISORY READ PID MAJOR:MINOR:INODE 0 EOF"); empty where there is none."""
    status = os.fstat(handle.fileno())
    file_id = f"{os.major(status.st_dev):02x}:{os.minor(status.st_dev):02x}:{status.st_ino}"
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return []
    pids = sorted(
        {fields[4] for fields in map(str.split, lines) if fields[1:2] == ["FLOCK"] and fields[5:6] == [file_id]}
    )
    return [f"PID {pid}: {_command_line(pid)}" for pid in pids]


def _command_line(pid: str) -> str:
    """A process's command as its user typed it: the interpreter that runs a script left out."""
    try:
        arguments = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return "its command unknown"
    if len(arguments) > 1 and Path(arguments[0]).name.startswith("python"):
        arguments = arguments[1:]
    if arguments:
        arguments[0] = Path(arguments[0]).name
    return " ".join(" ".join(arguments).split())[:200]


def _is_at(handle: TextIO, path: Path) -> bool:
    try:
        return os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False

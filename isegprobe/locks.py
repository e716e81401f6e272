"""One writer per output: an exclusive lock on a feature store, or on a training run, for the life of the command.

Two extractions into one store, or two trainings into one run folder, would otherwise interleave their files (or one
would delete the other's store) and both report success. The lock is `fcntl.flock` on a small file: the kernel
releases it when its process ends, however it ends (kill -9 included), so a lock left by a killed command never
blocks the next one. The file stays, holding the last holder's PID and command for the message a second command
gives. Under torchrun, rank 0 holds the lock for the whole job; the other ranks follow it through barriers.
"""

from __future__ import annotations

import fcntl
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from isegprobe.errors import UserError

RUN_LOCK = ".lock"


def store_lock_path(store: Path) -> Path:
    """Beside the store, not in it: `--overwrite` replaces the store's folder while the lock is held."""
    return store.with_name(store.name + ".lock")


@contextmanager
def exclusive_lock(lock_path: Path, what: Path) -> Iterator[None]:
    """Hold `lock_path` for the `with` body, or refuse at once naming the process that holds it; `what` is the
    output the lock protects, as the message names it."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "a process that has not said which yet"
            raise UserError(
                f"{what}: in use by another isegprobe command ({holder}); wait for it to end, or stop it, and run "
                "this one again"
            ) from None
        handle.seek(0)
        handle.truncate()
        command = " ".join(["isegprobe", *sys.argv[1:]])
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        handle.write(f"PID {os.getpid()} on {socket.gethostname()} since {started}: {command[:200]}\n")
        handle.flush()
        yield

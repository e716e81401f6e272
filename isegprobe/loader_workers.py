"""DataLoader workers: how many to start by default, and ending them with the process that started them.

When the main process is killed (`kill -9`, the out-of-memory killer), PyTorch's workers notice only while they
wait for work. A worker that is waiting to hand over a finished item blocks on its result pipe for good (it holds
that pipe's reading end as well, so the pipe never breaks), and the workers of a killed extraction stayed behind
for ever. On Linux each worker asks the kernel to kill it as soon as its parent dies (PR_SET_PDEATHSIG); elsewhere
nothing changes.
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import sys
from collections.abc import Callable
from types import FrameType, TracebackType

from isegprobe.distributed import ranks_on_this_machine
from isegprobe.errors import UserError

_PR_SET_PDEATHSIG = 1
# Above this many, extraction stopped getting faster on a 16-core GPU machine (8, 12 and 14 workers ran alike): the
# main process is the limit by then.
MAX_DEFAULT_WORKERS = 8


# Workers per core beyond which more only wait for each other: each is a process that starts Python and torch.
MAX_WORKERS_PER_CORE = 4


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_loader_workers() -> int:
    """The cores this process may use, shared among the torchrun ranks on this machine, at most
    MAX_DEFAULT_WORKERS. Decoding and resizing a 640x480 JPEG into two 448 px views costs 15 to 25 ms of CPU, so
    two workers would hold a GPU extraction to 80 to 130 items/s."""
    return max(1, min(MAX_DEFAULT_WORKERS, usable_cores() // ranks_on_this_machine()))


def require_sensible_workers(workers: int, option: str) -> None:
    """Refuse more loader workers than MAX_WORKERS_PER_CORE per core: starting a thousand took minutes on 2 cores
    before the first batch."""
    cores = usable_cores()
    if workers > MAX_WORKERS_PER_CORE * cores:
        raise UserError(
            f"{option} {workers}: more loader worker processes than {MAX_WORKERS_PER_CORE * cores} "
            f"({MAX_WORKERS_PER_CORE} per core of the {cores} here) only wait for each other, each starting its own "
            "Python and torch"
        )


def ends_with_this_process() -> Callable[[int], None] | None:
    """A `worker_init_fn` that ties each worker's life to the calling process (None where Linux's prctl is
    missing), quietly. It is a partial of a module function, so spawned workers can unpickle it."""
    if not sys.platform.startswith("linux"):
        return None
    return functools.partial(_die_with, os.getpid())


def _die_with(parent: int, worker_id: int) -> None:
    """Also end quietly on SIGTERM, with status 0: Slurm sends it to every process of a job, the workers too, and a
    worker killed by it made the main process's watch over its workers raise "DataLoader worker is killed by signal:
    Terminated" at whatever it was doing, so that a training run, which stops after its step in progress, failed with
    a traceback instead of saving its step; a worker that ends with status 0 is not reported. Ignoring the signal
    instead hung the main process where PyTorch ends a worker that does not stop by itself: with SIGTERM."""
    signal.signal(signal.SIGTERM, _end_quietly)
    sys.excepthook = _silent_when_the_parent_hangs_up
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
        return
    if os.getppid() != parent:  # the parent died before the request: the kernel would never send the signal
        os._exit(1)


def _end_quietly(signum: int, frame: FrameType | None) -> None:
    os._exit(0)


def _silent_when_the_parent_hangs_up(
    kind: type[BaseException], error: BaseException, trace: TracebackType | None
) -> None:
    """A worker hands each tensor over through a thread that the parent connects to (multiprocessing's
    resource_sharer), which reports a failed connection through `sys.excepthook`. A parent that stops (Ctrl-C, which
    it answers by saying what is kept) may hang up in the middle of one: the worker then printed an EOFError's
    traceback after the parent's message, about nothing the user must know. Every other error is printed as
    before."""
    if issubclass(kind, EOFError | ConnectionError):
        return
    sys.__excepthook__(kind, error, trace)

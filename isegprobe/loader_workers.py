"""DataLoader workers: how many to start by default, and how they end: with the process that started them, and only
when it asks.

When the main process is killed (`kill -9`, the out-of-memory killer), PyTorch's workers notice only while they
wait for work. A worker that is waiting to hand over a finished item blocks on its result pipe for good (it holds
that pipe's reading end as well, so the pipe never breaks), and the workers of a killed extraction stayed behind
for ever. On Linux each worker asks the kernel to kill it as soon as its parent dies (PR_SET_PDEATHSIG).

Ctrl-C and SIGTERM reach the workers too: a terminal sends SIGINT to its whole foreground process group, and Slurm
sends SIGTERM to every process of a job. The main process answers them by finishing what it does (a training step,
whose batch may be on its way from a worker) and then stops its loader, so a worker must serve until then: one that
ended on the signal made the main process fail reading a batch from it ("DataLoader worker ... exited
unexpectedly", or a connection reset while it took over a tensor's file descriptor). So on Linux a worker ignores
SIGINT, and ends on SIGTERM only when the process that started it sends it: PyTorch's shutdown ends a worker that
did not stop by itself so, and so does multiprocessing when the main process exits (a worker that ignored it hung
the main process there). The sender is known only to a thread that waits for the signal (`sigwaitinfo`), and only
if every thread of the worker blocks it, those that importing torch and the cache reader start included: the
workers are started with both signals blocked, which their threads inherit (as would a process a worker started;
none does). Elsewhere nothing changes.

The loader's queues of spawned workers name their semaphores in the file system, and multiprocessing's resource
tracker (a process of the same group, which ignores both signals) unlinks at the end those that the main process did
not say it released. A queue that the main process puts into (the workers' index queues; the result queue under a
pin-memory thread) has a feeder thread, a daemon that holds the queue's write lock and semaphore until it ends. PyTorch
closes these queues as it stops its workers, without waiting for their feeders, and drops them at once; a feeder that
ends after that releases the last references to the two semaphores, and its thread unlinks them and then tells the
tracker. When the command exited just then (a run that stopped, or finished, drops its loader moments before it exits)
the interpreter stopped the feeder before it had told the tracker, which printed, after the command's last line, "There
appear to be 1 leaked semaphore objects" (and "No such file or directory" when the name was already gone): twice in
some 300 stops of a training run's whole process group. On Linux the spawned loaders' queues wait, as they are closed
by the process that made them, for their feeder to end, so that the thread that drops the queue releases its
semaphores.
"""

from __future__ import annotations

import ctypes
import functools
import multiprocessing.context
import multiprocessing.process
import multiprocessing.queues
import os
import signal
import sys
import threading
from types import TracebackType
from typing import Any, Literal

from isegprobe.errors import UserError
from isegprobe.torchrun_env import ranks_on_this_machine

_PR_SET_PDEATHSIG = 1
# Above this many, extraction stopped getting faster on a 16-core GPU machine (8, 12 and 14 workers ran alike): the
# main process is the limit by then.
MAX_DEFAULT_WORKERS = 8


# Workers per core beyond which more only wait for each other: each is a process that starts Python and torch.
MAX_WORKERS_PER_CORE = 4

# How long a queue closed by its process waits for its feeder thread: one hands over what is left (a few index
# batches) in milliseconds. One that cannot (its pipe full and the worker that reads it gone, which is why PyTorch does
# not wait for it at all) is left as before, after as long as PyTorch gives a worker to end (MP_STATUS_CHECK_INTERVAL).
FEEDER_END_SECONDS = 5.0


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


def worker_processes(workers: int, start_method: Literal["fork", "spawn"]) -> dict[str, Any]:
    """The DataLoader arguments that start `workers` worker processes by `start_method`, tied to this process as the
    module says (on Linux; elsewhere plainly), or none. The worker's part is a partial of a module function, so
    spawned workers can unpickle it."""
    if workers == 0:
        return {"num_workers": 0}
    if not sys.platform.startswith("linux"):
        return {"num_workers": workers, "multiprocessing_context": multiprocessing.get_context(start_method)}
    return {
        "num_workers": workers,
        "multiprocessing_context": _ForkContext() if start_method == "fork" else _SpawnContext(),
        "worker_init_fn": functools.partial(_serve_until_the_parent_stops, os.getpid()),
    }


_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


class _StartsWithStopSignalsBlocked(multiprocessing.process.BaseProcess):
    """A process that starts with SIGINT and SIGTERM blocked: a forked child keeps the mask of the thread that forks
    it, and a spawned one keeps it through exec (multiprocessing's resource tracker is started so too)."""

    def start(self) -> None:
        before = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            super().start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, before)


class _ForkProcess(_StartsWithStopSignalsBlocked, multiprocessing.context.ForkProcess):
    pass


class _SpawnProcess(_StartsWithStopSignalsBlocked, multiprocessing.context.SpawnProcess):
    pass


class _ForkContext(multiprocessing.context.ForkContext):
    Process = _ForkProcess


class _QueueReleasedByItsCloser(multiprocessing.queues.Queue):
    """A queue whose `close()`, in the process that made it, waits for its feeder thread to end (the module says
    why): the semaphores then outlive the feeder and are released by whoever drops the queue. A worker's copy of the
    queue closes as before: its process never registered the semaphores, and its feeder may wait on a parent that
    stopped reading."""

    def close(self) -> None:
        super().close()
        feeder = self._thread
        if feeder is not None and feeder is not threading.current_thread() and self._opid == os.getpid():
            feeder.join(FEEDER_END_SECONDS)


class _SpawnContext(multiprocessing.context.SpawnContext):
    Process = _SpawnProcess

    def Queue(self, maxsize: int = 0) -> multiprocessing.queues.Queue:
        return _QueueReleasedByItsCloser(maxsize, ctx=self.get_context())


def _serve_until_the_parent_stops(parent: int, worker_id: int) -> None:
    """Ignore SIGINT, end on SIGTERM from `parent` alone, die with `parent`. Run first thing in the worker (its
    `worker_init_fn`), where both signals are still blocked as it was started: a SIGTERM that came before waits
    here."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_end_on_sigterm_from, args=(parent,), name="sigterm from parent", daemon=True).start()
    sys.excepthook = _silent_when_the_parent_hangs_up
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
        return
    if os.getppid() != parent:  # the parent died before the request: the kernel would never send the signal
        os._exit(1)


def _end_on_sigterm_from(parent: int) -> None:
    """End at once, with status 0 (which the parent's watch over its workers does not report), on the first
    SIGTERM that `parent` sends; keep serving through the others (Slurm's, torchrun's), which reached `parent` too:
    it stops after what it is doing and then stops its workers."""
    while signal.sigwaitinfo({signal.SIGTERM}).si_pid != parent:
        pass
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

"""Ctrl-C and SIGTERM that wait for the import under way, and how a command reports the one that stopped it.

A KeyboardInterrupt raised while an extension module initialises does not come out as one: tensorstore's ml_dtypes
turns it into `ImportError: initialization failed`, other imports into a RecursionError, and torch's pybind11 code can
abort the process from C++. So Ctrl-C in a command's first seconds, while torch, zarr and tensorstore load, ended with
a traceback and status 1 (or 134), not the 130 of an interruption. Under `interrupt_between_imports` the interrupt
is raised only outside imports; one that arrives during an import is sent again a moment later, until it lands
after the import.

SIGTERM is how a cluster stops a job (Slurm's preemption, time limit and scancel, then SIGKILL after a grace period of
30 s by default). Python's default for it ended a command at once with status -15 and no word: an extraction or an
evaluation kept its finished work but did not say so, and a training run lost the steps since its last checkpoint.
It now raises `Terminated`, a KeyboardInterrupt, so that every command stops on it exactly as on Ctrl-C, keeping what
it finished and saying so, and exits with SIGTERM's own status 143.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import warnings
from types import FrameType

# How long an interrupt that arrived during an import waits before it is sent again: short against a person's
# patience, long against the handler's own cost (a walk up the stack).
REDELIVERY_SECONDS = 0.05


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C raises KeyboardInterrupt, so that each command's handling of Ctrl-C covers it."""


def interrupt_between_imports() -> None:
    """Make SIGINT raise KeyboardInterrupt, and SIGTERM `Terminated`, only outside imports, for the rest of the
    process. Call it from the main thread before the heavy imports. A signal that the process was started ignoring
    (SIGINT in a background job, SIGTERM under nohup-like launchers) stays ignored, and a handler of the caller's own
    is kept."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _interrupt_outside_imports)
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt_outside_imports)


def stopped_by(interrupt: KeyboardInterrupt) -> signal.Signals:
    """The signal behind an interrupt: SIGTERM for `Terminated`, else SIGINT (Ctrl-C)."""
    return signal.SIGTERM if isinstance(interrupt, Terminated) else signal.SIGINT


def exit_status(interrupt: KeyboardInterrupt) -> int:
    """The shell's status for a process ended by the interrupt's signal (130, 143), which job scripts read as
    stopped, not failed."""
    return 128 + stopped_by(interrupt).value


def how_stopped(interrupt: KeyboardInterrupt) -> str:
    """The word a command's last line uses: "interrupted" for Ctrl-C, as it always said, "stopped by SIGTERM"
    otherwise, so that a job's log says the cluster stopped it."""
    number = stopped_by(interrupt)
    return "interrupted" if number == signal.SIGINT else f"stopped by {number.name}"


def _interrupt_outside_imports(signum: int, frame: FrameType | None) -> None:
    if _inside_an_import(frame):
        later = threading.Timer(REDELIVERY_SECONDS, os.kill, (os.getpid(), signum))
        later.daemon = True
        later.start()
        return
    _quiet_teardown()
    raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt


def _inside_an_import(frame: FrameType | None) -> bool:
    """Whether the interrupted code runs inside an import: importlib's own frames are on its stack (they are, below
    an extension module's initialisation too, whose Python calls link back to the frame that imported it)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def _quiet_teardown() -> None:
    """Silence what the interrupted process's teardown would print after the command's own last line. Zarr's event
    loop, in its own thread, is left with the reads the command waited for, or half made if the interrupt came as it
    started; as the interpreter ends they fail, and asyncio's logger, Python's hook for exceptions nobody can catch
    and un-awaited coroutines' warnings would print a screen of tracebacks about work the user chose to stop. The
    command's own messages and warnings, and the exit handlers, are untouched."""
    logging.getLogger("asyncio").setLevel(logging.CRITICAL + 1)
    sys.unraisablehook = _ignore_unraisable
    warnings.filterwarnings("ignore", message="coroutine .* was never awaited", category=RuntimeWarning)


def _ignore_unraisable(unraisable: sys.UnraisableHookArgs) -> None:
    return None

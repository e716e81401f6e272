"""Stopping a training run on request without losing its steps: Ctrl-C (SIGINT) or SIGTERM (what Slurm and
torchrun send before they kill a job) ends the run after the step in progress, and the trainer saves `last` there, so
that `--resume` continues exactly. Stopping in the middle of a step could leave the weights half updated by the
optimizer, which is why the signal only sets a flag. A second Ctrl-C stops at once, as without this; SIGTERM again
does not: Slurm sends it to every process of a job step, torchrun's ranks included, and torchrun passes on the one it
got too, so each rank gets two at once (the scheduler's SIGKILL ends a job that takes too long).

Under torchrun the ranks may get the signal at different steps; they agree (an all-reduce of the flag at each step)
so that all of them stop after the same one.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType

import torch
import torch.distributed as dist

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequests:
    """A context in which SIGINT and SIGTERM set `requested` instead of stopping the process (main thread only;
    elsewhere signals keep their handlers). A signal the process ignores stays ignored: a background job of a shell
    without job control (`isegprobe train ... &` in a script) starts with SIGINT ignored, so that a Ctrl-C meant for
    the foreground, which reaches the whole process group, leaves it running; taken over here, it stopped the run."""

    def __init__(self) -> None:
        self.signal: signal.Signals | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            self._previous = {
                number: signal.signal(number, self._handle)
                for number in STOP_SIGNALS
                if signal.getsignal(number) != signal.SIG_IGN
            }
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._restore()

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def agreed(self, device: torch.device) -> bool:
        """Whether any rank was asked to stop; every rank must call this at the same step. A rank stopped by
        another takes that rank's signal (the highest-numbered one when several were sent)."""
        if not (dist.is_available() and dist.is_initialized()):
            return self.requested
        number = torch.tensor([self.signal.value if self.signal else 0], device=device)
        dist.all_reduce(number, op=dist.ReduceOp.MAX)
        if number.item():
            self.signal = signal.Signals(int(number.item()))
        return self.requested

    def _handle(self, number: int, frame: FrameType | None) -> None:
        if self.signal is None:
            self.signal = signal.Signals(number)
        self._restore(signal.SIGINT)

    def _restore(self, *only: signal.Signals) -> None:
        """Give back the handlers taken over: those of `only`, else all."""
        for number in only or STOP_SIGNALS:
            if number in self._previous:
                signal.signal(number, self._previous.pop(number))

"""Process CPU time of the evaluation loop, split into the forwards, the reading of objects and the rest.

Kept apart from the benchmarks that use it, and free of anything newer than the evaluation loop of 4f588e3, so that
`eval_loop_cpu.py` can time another tree's loop with it (that tree's isegprobe on PYTHONPATH).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, TypeVar

import torch

T = TypeVar("T")


class ForwardClock:
    """Process CPU time spent inside the given modules' forwards (a forward inside another counted once)."""

    def __init__(self, modules: list[torch.nn.Module]) -> None:
        self.seconds, self._depth, self._started = 0.0, 0, 0.0
        for module in modules:
            module.register_forward_pre_hook(self._enter)
            module.register_forward_hook(self._leave)

    def _enter(self, *_: Any) -> None:
        if self._depth == 0:
            self._started = time.process_time()
        self._depth += 1

    def _leave(self, *_: Any) -> None:
        self._depth -= 1
        if self._depth == 0:
            self.seconds += time.process_time() - self._started


def timed_reads(tasks: Iterator[T], spent: list[float]) -> Iterator[T]:
    """The tasks, adding the process CPU time of reading each one to spent[0]."""
    while True:
        started = time.process_time()
        task = next(tasks, None)
        spent[0] += time.process_time() - started
        if task is None:
            return
        yield task

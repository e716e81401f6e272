"""The queues of the spawned loaders' workers: closed by the process that made them, they release their semaphores in
the thread that drops them, not in their feeder thread, which the interpreter's exit may stop half way (between
unlinking a semaphore and telling the resource tracker, which then warned after the command's last line)."""

from __future__ import annotations

import sys
import threading

import pytest

from isegprobe.loader_workers import worker_processes

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the loaders' own contexts are Linux's")


def test_a_closed_queue_has_ended_its_feeder_thread_as_the_loader_drops_it() -> None:
    """As the DataLoader treats a worker's index queue: put into it (which starts the feeder), cancel the wait for the
    feeder at exit, close it. This thread keeps the interpreter lock until it blocks (a switch interval of a minute),
    so the feeder has run only if `close` waited for it."""
    context = worker_processes(1, "spawn")["multiprocessing_context"]
    queue = context.Queue()
    before = set(threading.enumerate())
    queue.put([0, 1, 2, 3])
    feeders = set(threading.enumerate()) - before
    assert len(feeders) == 1, "put starts one feeder thread"
    queue.cancel_join_thread()
    interval = sys.getswitchinterval()
    sys.setswitchinterval(60)
    try:
        queue.close()
        running = [feeder for feeder in feeders if feeder.is_alive()]
    finally:
        sys.setswitchinterval(interval)
    assert not running, "the feeder still holds the queue's semaphores after close"

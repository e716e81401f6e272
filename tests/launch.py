"""The console script and torchrun, run as a user runs them: in subprocesses, from this Python's environment."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

ISEGPROBE = str(Path(sys.executable).with_name("isegprobe"))


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([ISEGPROBE, *args], capture_output=True, text=True, timeout=600, cwd=cwd)


def run_two_ranks(*args: str, port: int, rank_one_adds: Sequence[str] = ()) -> subprocess.CompletedProcess:
    """`torchrun --nproc-per-node 2 -m isegprobe ARGS` (gloo on CPU), rank 1 with `rank_one_adds` after ARGS (as two
    nodes' commands can differ); skips the test when torchrun is not installed beside this Python. Each test passes
    its own port, so tests running side by side do not meet."""
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun not installed beside this Python")
    launcher = [torchrun, "--nproc-per-node", "2", "--master-port", str(port)]
    if not rank_one_adds:
        return subprocess.run([*launcher, "-m", "isegprobe", *args], capture_output=True, text=True, timeout=600)
    script = f'if [ "$RANK" = 1 ]; then set -- "$@" {shlex.join(rank_one_adds)}; fi; exec {shlex.quote(ISEGPROBE)} "$@"'
    command = [*launcher, "--no-python", "sh", "-c", script, "sh", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def kill_when(command: Sequence[str], moment: Callable[[], bool], what: str) -> None:
    """Start `command`, SIGKILL its main process alone as soon as `moment()` holds, and check that it really was
    killed then (`what` says when) and that its DataLoader workers ended with it: they hold its stderr open until
    they end, so a worker left behind shows as a pipe that does not close."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    while process.poll() is None and not moment():
        time.sleep(0.001)
    process.send_signal(signal.SIGKILL)
    try:
        stderr = process.communicate(timeout=30)[1].decode()
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise AssertionError(f"workers of the run killed {what} outlived it by 30 s") from None
    assert process.returncode == -signal.SIGKILL, f"the run ended before it could be killed {what}:\n{stderr}"


def ctrl_c_when(command: Sequence[str], moment: Callable[[], bool]) -> tuple[int, str]:
    """Start `command`, send it SIGINT (what Ctrl-C sends the foreground process) as soon as `moment()` holds, and
    return its exit status and what it wrote to stderr."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while process.poll() is None and not moment():
        time.sleep(0.001)
    process.send_signal(signal.SIGINT)
    stderr = process.communicate(timeout=60)[1]
    return process.returncode, stderr


# Slurm's grace between SIGTERM and SIGKILL, by default: a command stopped by SIGTERM must have ended well within it.
SLURM_GRACE_SECONDS = 30


def terminate_group_when(command: Sequence[str], moment: Callable[[], bool]) -> tuple[int, str]:
    """Start `command` in a process group of its own and, as soon as `moment()` holds, send SIGTERM to the whole
    group, as Slurm stops a job (loader workers and torchrun's ranks get it too); return its exit status and what it
    wrote to stderr. It must end within Slurm's grace, as its loader workers must: they hold stderr open."""
    return signal_group_when(command, lambda pid: moment(), signal.SIGTERM)


def signal_group_when(command: Sequence[str], moment: Callable[[int], bool], stop: signal.Signals) -> tuple[int, str]:
    """As `terminate_group_when`, with `stop` (SIGINT is what Ctrl-C in a terminal sends its whole foreground group),
    and `moment` given the command's process id."""
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    while process.poll() is None and not moment(process.pid):
        time.sleep(0.001)
    os.killpg(process.pid, stop)
    try:
        stderr = process.communicate(timeout=SLURM_GRACE_SECONDS)[1]
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise AssertionError(f"still running {SLURM_GRACE_SECONDS} s after {stop.name}, when Slurm kills it") from None
    return process.returncode, stderr


def loader_worker_started(pid: int) -> bool:
    """Process `pid` has started a spawned DataLoader worker (multiprocessing's resource tracker, also its child, is
    not one). The worker may still be importing torch."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        return any(b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes() for child in children)
    except OSError:
        return False


def hold_lock(output: Path, shared: bool = False) -> subprocess.Popen:
    """Another process holding the lock of `output` (a store or run folder), as a running extraction or training
    does, until it is killed; `shared`: a store's shared lock, as a training or evaluation that reads it holds."""
    lock = "shared_locks" if shared else "exclusive_lock"
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        f"from isegprobe.locks import {lock}\n"
        f"with {lock}(Path(sys.argv[1])):\n"
        "    print('held', flush=True)\n"
        "    time.sleep(600)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", script, str(output)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process

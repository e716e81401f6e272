"""The console script and torchrun, run as a user runs them: in subprocesses, from this Python's environment."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ISEGPROBE = str(Path(sys.executable).with_name("isegprobe"))


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([ISEGPROBE, *args], capture_output=True, text=True, timeout=600)


def run_two_ranks(*args: str, port: int) -> subprocess.CompletedProcess:
    """`torchrun --nproc-per-node 2 -m isegprobe ARGS` (gloo on CPU); skips the test when torchrun is not installed
    beside this Python. Each test passes its own port, so tests running side by side do not meet."""
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun not installed beside this Python")
    command = [torchrun, "--nproc-per-node", "2", "--master-port", str(port), "-m", "isegprobe", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)

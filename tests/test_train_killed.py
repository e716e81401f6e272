"""`isegprobe train` killed with SIGKILL mid-run, or stopped by SIGINT / SIGTERM, then `--resume`: the finished
run's weights and Adam state equal those of a run never interrupted, bit for bit. Real processes and real signals,
with spawned loader workers: the kills land wherever the run is, checkpoint writes included, and the workers must end
with the killed process; a stop request ends the run after a whole step and saves it there, and the command its
message gives continues the run as it is written, logging the means it would have logged uninterrupted."""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from launch import SLURM_GRACE_SECONDS, kill_when, loader_worker_started, signal_group_when
from safetensors.torch import load_file
from stores import builtin_store

STEPS = 60


def command(store: Path, run: Path, *extra: str, every: int = 5) -> list[str]:
    return [
        sys.executable, "-m", "isegprobe", "train", "--config", "quickstart", "--store", str(store),
        "--out", str(run), "--max-iters", str(STEPS), "--device", "cpu",
        "--set", f"checkpoint.every_steps={every}", "--set", "data.num_workers=1", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The training store and a run of it never interrupted."""
    folder = tmp_path_factory.mktemp("straight")
    store = builtin_store(folder / "cache", split="train")
    subprocess.run(command(store, folder / "run"), check=True, capture_output=True)
    return store, folder / "run"


def assert_same_run(finished: Path, straight_run: Path) -> None:
    for name in ("last.safetensors", "last.optim.safetensors"):
        expected, got = load_file(straight_run / name), load_file(finished / name)
        assert expected.keys() == got.keys()
        for key in expected:
            assert torch.equal(expected[key], got[key]), f"{name}: {key}"


def saved_step(run: Path) -> int:
    try:
        return int(json.loads((run / "last.json").read_text())["step"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return 0


def kill_after_step(store: Path, run: Path, step: int, *extra: str) -> None:
    kill_when(command(store, run, *extra), lambda: saved_step(run) >= step, f"after step {step}")
    assert saved_step(run) < STEPS


def test_training_killed_twice_then_resumed_ends_with_the_uninterrupted_weights(
    straight: tuple[Path, Path], tmp_path: Path
) -> None:
    store, straight_run = straight
    run = tmp_path / "killed"
    kill_after_step(store, run, 10)
    kill_after_step(store, run, 30, "--resume")
    resumed = subprocess.run(command(store, run, "--resume"), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert saved_step(run) == STEPS
    assert_same_run(run, straight_run)
    assert train_rows(run) == train_rows(straight_run)


def test_sigterm_twice_ends_training_after_a_whole_step_saved_and_the_command_it_gives_finishes_it(
    straight: tuple[Path, Path], tmp_path: Path
) -> None:
    """SIGTERM to the main process, and again at once, as a torchrun rank under Slurm gets it from both (the second
    one ended the run at once, with -15). Checkpoints every 1000 steps, so the one the stop leaves is the stop's own.
    SIGINT and SIGTERM sent to the whole process group: the test below."""
    stop = signal.SIGTERM
    store, straight_run = straight
    run = tmp_path / "stopped"
    process = subprocess.Popen(
        command(store, run, every=1000),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    while process.poll() is None and not logged_steps(run):
        time.sleep(0.005)
    process.send_signal(stop)
    time.sleep(0.01)
    process.send_signal(stop)
    stdout, stderr = process.communicate(timeout=SLURM_GRACE_SECONDS)
    assert process.returncode == 128 + stop.value, stderr
    step = saved_step(run)
    assert 0 < step < STEPS
    assert f"{stop.name}: stopped after step {step}, saved as" in stderr
    assert "Traceback" not in stderr

    hint = stderr.split("`")[-2]  # the command the message gives, run as given: the run recorded its store
    assert hint == f"isegprobe train --resume --out {run} --device cpu", "the device given is repeated"
    resumed = subprocess.run([sys.executable, "-m", *shlex.split(hint)], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(run, straight_run)
    assert train_rows(run) == train_rows(straight_run), "the logged means of the window the stop cut"


def test_the_whole_group_signalled_stops_after_a_whole_step_whenever_it_comes_and_resume_finishes_it(
    straight: tuple[Path, Path], tmp_path: Path
) -> None:
    """SIGTERM as Slurm sends it and SIGINT as Ctrl-C in a terminal does: to the whole process group, the loader
    worker included. Stopped while its worker starts (the run waits for its first batch) and while it trains, the
    run finishes the step in progress each time, saves it, and the last --resume ends as a run never stopped. A
    worker that ended on the signal made the run fail reading a batch from it ("DataLoader worker ... exited
    unexpectedly", or a connection reset while it took over a tensor): every time while it started, about one time
    in four later. The command's message is the last line of the group's stderr: multiprocessing's resource tracker,
    which outlives the command, warned after it twice in some 300 such stops (tests/test_loader_workers.py says why)."""
    store, straight_run = straight
    run = tmp_path / "stopped"

    def training_goes_on(pid: int) -> bool:
        return len(train_rows_so_far(run)) > rows

    stops = [
        (signal.SIGTERM, (), loader_worker_started),
        (signal.SIGINT, ("--resume",), loader_worker_started),
        (signal.SIGTERM, ("--resume",), training_goes_on),
    ]
    for stop, resume, moment in stops:
        before, rows = saved_step(run), len(train_rows_so_far(run))
        returncode, stderr = signal_group_when(command(store, run, *resume, every=1000), moment, stop)
        assert returncode == 128 + stop.value, stderr
        assert "Traceback" not in stderr, stderr
        step = saved_step(run)
        assert before < step < STEPS, stderr
        assert f"{stop.name}: stopped after step {step}, saved as" in stderr.splitlines()[-1], stderr
    resumed = subprocess.run(command(store, run, "--resume", every=1000), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(run, straight_run)
    assert train_rows(run) == train_rows(straight_run)


def train_rows_so_far(run: Path) -> list[str]:
    """`train_rows` of a run that may not have logged yet."""
    return train_rows(run) if (run / "scalars.csv").is_file() else []


def train_rows(run: Path) -> list[str]:
    return [row for row in (run / "scalars.csv").read_text().splitlines() if ",train/" in row or ",epoch/" in row]


def logged_steps(run: Path) -> bool:
    """Training is under way: scalars.csv holds a logged step."""
    scalars = run / "scalars.csv"
    return scalars.is_file() and ",train/" in scalars.read_text()

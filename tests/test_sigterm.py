"""SIGTERM, as Slurm stops a job (preemption, time limit, scancel): sent to the whole process group, loader workers
included, each command stops within Slurm's grace, keeps what it finished, says so in one line with the way to go on,
exits with 143 and no traceback, and the same command again finishes to the results of a run never stopped. Real
processes and real signals. Python's default ended each command at once with -15 and no word, and a training run's
loader workers, ended by the same signal, made it fail with a traceback instead of saving its step."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import zarr
from launch import terminate_group_when
from stores import builtin_store

from isegprobe.cache import CachedDataset
from isegprobe.config_loading import load_train_config
from isegprobe.inference.results import objects_written
from isegprobe.training import train
from isegprobe.training.stopping import StopRequests

TERMINATED = 128 + signal.SIGTERM.value


def isegprobe(*args: str) -> list[str]:
    return [sys.executable, "-m", "isegprobe", *args]


def done_items(store: Path) -> int:
    folder = store / "done" / "c"
    return sum(1 for path in folder.rglob("*") if path.is_file()) if folder.is_dir() else 0


def assert_stopped(returncode: int, stderr: str, line: str) -> None:
    assert returncode == TERMINATED, stderr
    assert "Traceback" not in stderr and "Aborted!" not in stderr, stderr
    assert line in stderr.splitlines()[-1], stderr


def test_extraction_with_loader_workers_keeps_its_items_and_the_same_command_finishes(tmp_path: Path) -> None:
    command = isegprobe(
        "extract-features", "--featurizer", "vit_small_patch14_dinov2", "--weights", "random", "--dataset", "builtin",
        "--split", "train", "--size", "56", "--views", "identity", "--items-per-shard", "1", "--batch-size", "2",
        "--workers", "2", "--device", "cpu", "--out", str(tmp_path),
    )  # fmt: skip
    store = tmp_path / "vit_small_patch14_dinov2-builtin-train-56.zarr"
    returncode, stderr = terminate_group_when(command, lambda: done_items(store) >= 3)
    assert_stopped(
        returncode,
        stderr,
        "extract-features: stopped by SIGTERM; the items finished before it are kept in the store, and the same "
        "command goes on from there",
    )
    kept = done_items(store)
    assert 3 <= kept < 24
    finished = subprocess.run(command, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    assert f"extracted {24 - kept} of 24 items" in finished.stdout
    assert zarr.open_group(str(store))["done"][:].all()


def test_evaluation_keeps_its_objects_and_the_same_command_gives_the_results_of_one_never_stopped(
    tmp_path: Path,
) -> None:
    store = builtin_store(tmp_path / "cache")
    train(load_train_config("quickstart", ["schedule.max_iters=0"]), CachedDataset(store), tmp_path / "run",
          device="cpu", progress=False)  # fmt: skip

    def command(out: str) -> list[str]:
        return isegprobe(
            "evaluate", "--checkpoint", str(tmp_path / "run"), "--store", str(store), "--batch-size", "1",
            "--max-clicks", "10", "--device", "cpu", "--out", str(tmp_path / out),
        )  # fmt: skip

    subprocess.run(command("reference"), check=True, capture_output=True)
    returncode, stderr = terminate_group_when(command("stopped"), lambda: objects_written(tmp_path / "stopped") >= 2)
    assert_stopped(returncode, stderr, "evaluate: stopped by SIGTERM; the objects of the batches finished before it")
    assert objects_written(tmp_path / "stopped") >= 2
    finished = subprocess.run(command("stopped"), capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    reference, resumed = (json.loads((tmp_path / out / "results.json").read_text()) for out in ("reference", "stopped"))
    timings = ("sec_per_click", "sec_per_click_loop", "clicks_timed")
    for name, summary in reference["datasets"].items():
        assert {key: value for key, value in resumed["datasets"][name].items() if key not in timings} == {
            key: value for key, value in summary.items() if key not in timings
        }


def test_quickstart_stopped_while_it_extracts_goes_on_with_the_same_command(tmp_path: Path) -> None:
    out = tmp_path / "quickstart"
    command = isegprobe("quickstart", "--size", "56", "--max-iters", "2", "--max-clicks", "2", "--out", str(out),
                        "--device", "cpu")  # fmt: skip
    store = out / "cache" / "vit_small_patch14_dinov2-builtin-train-56.zarr"
    returncode, stderr = terminate_group_when(command, lambda: done_items(store) >= 1)
    assert_stopped(
        returncode,
        stderr,
        f"quickstart: stopped by SIGTERM; the items extracted and the run's last checkpoint are kept in {out}",
    )
    hint = stderr.split("`")[-2]
    assert hint == f"isegprobe quickstart --size 56 --out {out} --max-iters 2 --max-clicks 2 --device cpu"
    finished = subprocess.run([sys.executable, "-m", *shlex.split(hint)], capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    assert "[3/3 evaluate]" in finished.stdout


def test_sigterm_while_a_command_starts_and_builds_its_model_exits_143_without_a_traceback(tmp_path: Path) -> None:
    """While torch, timm and zarr load (a signal that arrives during an import lands once it is done, as Ctrl-C's
    does: tests/test_cli.py) and while the featurizer is built: before the command handles it, its last line says
    how it stopped; once it does, the command's own line says what is kept."""
    for delay in (0.3, 1.5):
        command = subprocess.Popen(
            isegprobe(
                "extract-features",
                "--featurizer",
                "vit_small_patch14_dinov2",
                "--weights",
                "random",
                "--dataset",
                "builtin",
                "--split",
                "train",
                "--size",
                "224",
                "--device",
                "cpu",
                "--workers",
                "0",
                "--out",
                str(tmp_path / str(delay)),
            ),  # fmt: skip
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(delay)
        command.send_signal(signal.SIGTERM)
        stderr = command.communicate(timeout=60)[1]
        assert command.returncode == TERMINATED, (delay, stderr)
        assert "Traceback" not in stderr, (delay, stderr)
        assert stderr.splitlines()[-1].startswith(("stopped by SIGTERM", "extract-features: stopped by SIGTERM")), (
            delay,
            stderr,
        )


def test_a_stop_signal_the_process_ignores_stays_ignored_while_it_trains() -> None:
    """A background job of a shell without job control (`isegprobe train ... &` in a script) starts with SIGINT
    ignored, so that a Ctrl-C meant for the foreground, which reaches the whole process group, leaves it running. The
    command's start kept it ignored, but the training loop's stop handler took SIGINT over, and such a Ctrl-C stopped
    the run."""
    ignoring = signal.signal(signal.SIGINT, signal.SIG_IGN)
    term = signal.getsignal(signal.SIGTERM)
    try:
        with StopRequests() as stops:
            assert signal.getsignal(signal.SIGTERM) != term, "SIGTERM, not ignored, is taken over (the main thread)"
            assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            assert not stops.requested
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN and signal.getsignal(signal.SIGTERM) == term
    finally:
        signal.signal(signal.SIGINT, ignoring)

"""`isegprobe train` killed with SIGKILL mid-run, then `--resume`: the finished run's weights and Adam state equal
those of a run never interrupted, bit for bit. Real processes and real kills, with spawned loader workers: the kills
land wherever the run is, checkpoint writes included, and the workers must end with the killed process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
from launch import kill_when
from safetensors.torch import load_file
from stores import builtin_store

STEPS = 60


def command(store: Path, run: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "isegprobe", "train", "--config", "quickstart", "--cache", str(store),
        "--out", str(run), "--max-iters", str(STEPS), "--device", "cpu",
        "--set", "checkpoint.every_steps=5", "--set", "data.num_workers=2", *extra,
    ]  # fmt: skip


def saved_step(run: Path) -> int:
    try:
        return int(json.loads((run / "last.json").read_text())["step"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return 0


def kill_after_step(store: Path, run: Path, step: int, *extra: str) -> None:
    kill_when(command(store, run, *extra), lambda: saved_step(run) >= step, f"after step {step}")
    assert saved_step(run) < STEPS


def test_training_killed_twice_then_resumed_ends_with_the_uninterrupted_weights(tmp_path: Path) -> None:
    store = builtin_store(tmp_path / "cache", split="train")
    subprocess.run(command(store, tmp_path / "straight"), check=True, capture_output=True)
    run = tmp_path / "killed"
    kill_after_step(store, run, 10)
    kill_after_step(store, run, 30, "--resume")
    resumed = subprocess.run(command(store, run, "--resume"), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert saved_step(run) == STEPS

    for name in ("last.safetensors", "last.optim.safetensors"):
        straight, killed = load_file(tmp_path / "straight" / name), load_file(run / name)
        assert straight.keys() == killed.keys()
        for key in straight:
            assert torch.equal(straight[key], killed[key]), f"{name}: {key}"

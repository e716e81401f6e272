"""`torchrun ... isegprobe train`: ranks split each batch and average gradients, so training matches one process."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from stores import builtin_store

from isegprobe.config import load_train_config
from isegprobe.model.probe import ISProbe
from isegprobe.training.checkpoint import read_metadata

OVERRIDES = ["clicks.max_num_next_clicks=0", "data.batch_size=4", "schedule.max_iters=3"]


def test_two_ranks_train_like_one_process(tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun not installed beside this Python")
    store = builtin_store(tmp_path / "cache")
    sets = [arg for override in OVERRIDES for arg in ("--set", override)]
    command = ["train", "--config", "quickstart", *sets, "--cache", str(store), "--device", "cpu"]
    single = subprocess.run(
        [str(Path(sys.executable).with_name("isegprobe")), *command, "--out", str(tmp_path / "single")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert single.returncode == 0, single.stderr
    ranks = subprocess.run(
        [
            torchrun,
            "--nproc-per-node",
            "2",
            "--master-port",
            "29541",
            "-m",
            "isegprobe",
            *command,
            "--out",
            str(tmp_path / "ranks"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert ranks.returncode == 0, ranks.stderr
    one, two = load_file(tmp_path / "single" / "last.safetensors"), load_file(tmp_path / "ranks" / "last.safetensors")
    metadata = read_metadata(tmp_path / "ranks" / "last.json")
    assert metadata["step"] == 3
    torch.manual_seed(0)
    start = ISProbe(load_train_config("quickstart", OVERRIDES).model, **metadata["model"]).state_dict()
    moved = torch.sqrt(sum(((one[key] - start[key]) ** 2).sum() for key in one))
    apart = torch.sqrt(sum(((one[key] - two[key]) ** 2).sum() for key in one))
    assert moved > 0 and apart < 0.02 * moved, (float(apart), float(moved))

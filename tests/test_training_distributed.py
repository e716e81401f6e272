"""`torchrun ... isegprobe train`: ranks split each batch and average gradients, so training matches one process."""

from __future__ import annotations

import torch
from launch import run_cli, run_two_ranks
from safetensors.torch import load_file
from stores import builtin_store

from isegprobe.config import load_train_config
from isegprobe.model.probe import ISProbe
from isegprobe.training.checkpoint import read_metadata

OVERRIDES = ["clicks.max_num_next_clicks=0", "data.batch_size=4", "schedule.max_iters=3"]


def test_two_ranks_train_like_one_process(tmp_path):
    store = builtin_store(tmp_path / "cache")
    sets = [arg for override in OVERRIDES for arg in ("--set", override)]
    command = ["train", "--config", "quickstart", *sets, "--store", str(store), "--device", "cpu"]
    ranks = run_two_ranks(*command, "--out", str(tmp_path / "ranks"), port=29541)
    single = run_cli(*command, "--out", str(tmp_path / "single"))
    assert single.returncode == 0, single.stderr
    assert ranks.returncode == 0, ranks.stderr
    one, two = load_file(tmp_path / "single" / "last.safetensors"), load_file(tmp_path / "ranks" / "last.safetensors")
    metadata = read_metadata(tmp_path / "ranks" / "last.json")
    assert metadata["step"] == 3
    torch.manual_seed(0)
    start = ISProbe(load_train_config("quickstart", OVERRIDES).model, **metadata["model"]).state_dict()
    moved = torch.sqrt(sum(((one[key] - start[key]) ** 2).sum() for key in one))
    apart = torch.sqrt(sum(((one[key] - two[key]) ** 2).sum() for key in one))
    assert moved > 0 and apart < 0.02 * moved, (float(apart), float(moved))


def test_two_ranks_train_probes_side_by_side_like_one_process(tmp_path):
    store = builtin_store(tmp_path / "cache")
    sets = [arg for override in OVERRIDES for arg in ("--set", override)]
    variants = ["--variant", "w16 model.head.width=16", "--variant", "w32 model.head.width=32 optim.lr=1e-3"]
    command = ["train", "--config", "quickstart", *sets, *variants, "--store", str(store), "--device", "cpu"]
    ranks = run_two_ranks(*command, "--out", str(tmp_path / "ranks"), port=29547)
    single = run_cli(*command, "--out", str(tmp_path / "single"))
    assert single.returncode == 0, single.stderr
    assert ranks.returncode == 0, ranks.stderr
    for name, width in (("w16", 16), ("w32", 32)):
        one = load_file(tmp_path / "single" / name / "last.safetensors")
        two = load_file(tmp_path / "ranks" / name / "last.safetensors")
        metadata = read_metadata(tmp_path / "ranks" / name / "last.json")
        assert metadata["step"] == 3
        torch.manual_seed(0)
        config = load_train_config("quickstart", [*OVERRIDES, f"model.head.width={width}"])
        start = ISProbe(config.model, **metadata["model"]).state_dict()
        moved = torch.sqrt(sum(((one[key] - start[key]) ** 2).sum() for key in one))
        apart = torch.sqrt(sum(((one[key] - two[key]) ** 2).sum() for key in one))
        assert moved > 0 and apart < 0.02 * moved, (name, float(apart), float(moved))

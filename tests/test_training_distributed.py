"""`torchrun ... isegprobe train`: ranks split each batch and average gradients, so training matches one process."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from launch import run_cli, run_two_ranks
from safetensors.torch import load_file
from stores import builtin_store

from isegprobe.config_loading import load_train_config
from isegprobe.distributed import init_from_env
from isegprobe.errors import UserError
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


def test_ranks_started_with_different_commands_stop_naming_the_setting(tmp_path):
    """As two nodes' commands can differ: rank 1 with another step count waited for ever in the gradients'
    all-reduce (another learning rate trained on, exit 0). Every rank now stops, naming the setting."""
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun not installed beside this Python")
    store = builtin_store(tmp_path / "cache")
    sets = [arg for override in OVERRIDES for arg in ("--set", override)]
    command = [sys.executable, "-m", "isegprobe", "train", "--config", "quickstart", *sets, "--store", str(store)]
    script = tmp_path / "rank.sh"
    script.write_text(
        "#!/bin/sh\n"
        'if [ "$RANK" = "1" ]; then set -- --max-iters 4; fi\n'
        f'exec {shlex.join([*command, "--device", "cpu", "--out", str(tmp_path / "run")])} "$@"\n'
    )
    script.chmod(0o755)
    launched = [torchrun, "--nproc-per-node", "2", "--master-port", "29549", "--no-python", str(script)]
    result = subprocess.run(launched, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    message = "torchrun rank 1 runs another command than rank 0: the run schedule.max_iters is 4 there and 3 on rank 0"
    assert result.stderr.count(message) == 2, result.stderr  # both ranks say it, and neither waits
    assert not (tmp_path / "run" / "last.json").exists()


def test_a_rank_that_dies_leaves_the_other_saying_what_is_kept_and_how_to_go_on(tmp_path):
    """Rank 1 killed after the first checkpoint: rank 0's collective fails. It printed gloo's forty-line traceback;
    it now says in one line where the run stands and which command continues it."""
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun not installed beside this Python")
    store = builtin_store(tmp_path / "cache")
    run = tmp_path / "run"
    sets = ["schedule.max_iters=5000", "schedule.epochs=5000", "checkpoint.every_steps=2", "data.batch_size=4"]
    command = [sys.executable, "-m", "isegprobe", "train", "--config", "quickstart", "--store", str(store)]
    command += [word for override in sets for word in ("--set", override)] + ["--device", "cpu", "--out", str(run)]
    script = tmp_path / "rank.sh"
    script.write_text(  # rank 1's shell outlives it a while, so that torchrun stops rank 0 only after it has spoken
        "#!/bin/sh\n"
        f'if [ "$RANK" != "1" ]; then exec {shlex.join(command)}; fi\n'
        f"{shlex.join(command)} & child=$!\n"
        f"while [ ! -f {shlex.quote(str(run / 'last.json'))} ]; do sleep 0.05; done\n"
        "kill -9 $child; sleep 20; exit 9\n"
    )
    script.chmod(0o755)
    launched = [torchrun, "--nproc-per-node", "2", "--master-port", "29551", "--no-python", str(script)]
    result = subprocess.run(launched, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    said = re.search(r"Error: rank 0: lost contact with another torchrun rank after step \d+ .*", result.stderr)
    assert said, result.stderr
    kept = read_metadata(run / "last.json")["step"]
    assert f"{run}: last checkpoint at step {kept}." in said[0] and kept >= 2
    hint = f"`torchrun --nproc-per-node 2 -m isegprobe train --resume --out {run} --device cpu` continues from there"
    assert hint in said[0]
    assert "[rank0]: Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        (
            {"WORLD_SIZE": "abc"},
            "WORLD_SIZE='abc' in the environment: torchrun sets it to a whole number of at least 1",
        ),
        ({"WORLD_SIZE": "0"}, "WORLD_SIZE='0' in the environment"),
        ({"WORLD_SIZE": "2", "RANK": "-1"}, "RANK='-1' in the environment"),
        ({"WORLD_SIZE": "2", "RANK": "2"}, "RANK=2 with WORLD_SIZE=2 in the environment: a rank counts from 0"),
        ({"LOCAL_WORLD_SIZE": "two"}, "LOCAL_WORLD_SIZE='two' in the environment: torchrun sets it to a whole number"),
        ({"LOCAL_WORLD_SIZE": "0"}, "LOCAL_WORLD_SIZE='0' in the environment"),
        (
            {"LOCAL_WORLD_SIZE": "2", "LOCAL_RANK": "2"},
            "LOCAL_RANK=2 with LOCAL_WORLD_SIZE=2 in the environment: a rank on this machine counts from 0",
        ),
    ],
)
def test_launcher_settings_left_over_or_mistyped_are_named(monkeypatch, environment, message):
    # A traceback (int('abc'), a division by zero, a batch size of -4) before, or a wait for ranks that never come;
    # LOCAL_WORLD_SIZE was read as 1 (the loader's default workers) and printed as it was (the resume command).
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(UserError, match=re.escape(message)):
        init_from_env("cpu")

"""`isegprobe evaluate` stopped by Ctrl-C: it says what it keeps, exits 130 as extract-features and train do, and
the same command evaluates only the objects it had not finished, to the results of a run never stopped."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from launch import ctrl_c_when
from stores import builtin_store

from isegprobe.cache import CachedDataset
from isegprobe.config import load_train_config
from isegprobe.training import train


def finished_objects(results: Path) -> int:
    """Objects in the results written so far (after every batch); 0 before the first."""
    try:
        summary = json.loads((results / "results.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return 0
    return sum(dataset["num_instances"] for dataset in summary["datasets"].values())


def test_ctrl_c_says_what_is_kept_exits_130_and_the_same_command_goes_on(tmp_path: Path) -> None:
    store = builtin_store(tmp_path / "cache")
    config = load_train_config("quickstart", ["schedule.max_iters=0"])
    train(config, CachedDataset(store), tmp_path / "run", device="cpu", progress=False)

    def command(out: str) -> list[str]:
        return [
            sys.executable, "-m", "isegprobe", "evaluate", "--checkpoint", str(tmp_path / "run"),
            "--store", str(store), "--batch-size", "1", "--max-clicks", "20", "--out", str(tmp_path / out),
        ]  # fmt: skip

    subprocess.run(command("reference"), check=True, capture_output=True)
    total = finished_objects(tmp_path / "reference")
    returncode, stderr = ctrl_c_when(command("interrupted"), lambda: finished_objects(tmp_path / "interrupted") >= 2)

    assert returncode == 130, stderr
    assert "evaluate: interrupted; the objects of the batches finished before it are kept in" in stderr
    assert "Traceback" not in stderr and "Aborted!" not in stderr
    assert 2 <= finished_objects(tmp_path / "interrupted") < total, "interrupted after the second object"
    finished = subprocess.run(command("interrupted"), capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    reference, resumed = (
        json.loads((tmp_path / out / "results.json").read_text()) for out in ("reference", "interrupted")
    )
    timings = ("sec_per_click", "sec_per_click_loop", "clicks_timed")
    for name, summary in reference["datasets"].items():
        assert {key: value for key, value in resumed["datasets"][name].items() if key not in timings} == {
            key: value for key, value in summary.items() if key not in timings
        }

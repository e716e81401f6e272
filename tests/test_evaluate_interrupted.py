"""`isegprobe evaluate` stopped by Ctrl-C: it says what it keeps, exits 130 as extract-features and train do, and
the same command evaluates only the objects it had not finished, to the results of a run never stopped."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from launch import ctrl_c_when
from stores import builtin_store

from isegprobe.cache import CachedDataset
from isegprobe.cli import main
from isegprobe.config_loading import load_train_config
from isegprobe.inference.results import objects_written
from isegprobe.training import train


def test_ctrl_c_says_what_is_kept_exits_130_and_the_same_command_goes_on(tmp_path: Path) -> None:
    store = builtin_store(tmp_path / "cache")
    config = load_train_config("quickstart", ["schedule.max_iters=0"])
    train(config, CachedDataset(store), tmp_path / "run", device="cpu", progress=False)

    def command(out: str) -> list[str]:
        return [
            sys.executable, "-m", "isegprobe", "evaluate", "--checkpoint", str(tmp_path / "run"),
            "--store", str(store), "--batch-size", "1", "--max-clicks", "5", "--out", str(tmp_path / out),
        ]  # fmt: skip

    subprocess.run(command("reference"), check=True, capture_output=True)
    total = objects_written(tmp_path / "reference")
    returncode, stderr = ctrl_c_when(command("interrupted"), lambda: objects_written(tmp_path / "interrupted") >= 2)

    assert returncode == 130, stderr
    assert "evaluate: interrupted; the objects of the batches finished before it are kept in" in stderr
    assert "Traceback" not in stderr and "Aborted!" not in stderr
    assert 2 <= objects_written(tmp_path / "interrupted") < total, "interrupted after the second object"
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


def test_a_run_stopped_between_writing_the_curves_and_results_json_goes_on(tmp_path: Path) -> None:
    """ious.npz is replaced before results.json: a kill between the two leaves the curves of one more batch than
    results.json counts. The same command goes on from the objects results.json counts, to the results of a run
    never stopped, instead of refusing the folder and offering only --overwrite, which discards them."""
    store = builtin_store(tmp_path / "cache")
    config = load_train_config("quickstart", ["schedule.max_iters=0"])
    train(config, CachedDataset(store), tmp_path / "run", device="cpu", progress=False)
    common = ["evaluate", "--checkpoint", tmp_path / "run", "--store", store, "--batch-size", "1", "--max-clicks", "3"]

    def evaluate(out: str, *more: object) -> None:
        result = CliRunner().invoke(main, [str(arg) for arg in (*common, *more, "--out", tmp_path / out)])
        assert result.exit_code == 0, result.output

    evaluate("reference")
    stopped = tmp_path / "stopped"
    evaluate("stopped", "--max-objects", "2")
    counted = {name: (stopped / name).read_bytes() for name in ("results.json", "results.csv")}
    evaluate("stopped", "--max-objects", "4")
    for name, data in counted.items():  # the state a kill after ious.npz's replacement leaves
        (stopped / name).write_bytes(data)
    assert len(np.load(stopped / "ious.npz")["builtin/ids"]) == 4 and objects_written(stopped) == 2

    evaluate("stopped")
    timings = ("sec_per_click", "sec_per_click_loop", "clicks_timed")
    reference, resumed = (json.loads((tmp_path / out / "results.json").read_text()) for out in ("reference", "stopped"))
    for name, summary in reference["datasets"].items():
        assert {key: value for key, value in resumed["datasets"][name].items() if key not in timings} == {
            key: value for key, value in summary.items() if key not in timings
        }
    with np.load(tmp_path / "reference" / "ious.npz") as one, np.load(stopped / "ious.npz") as other:
        assert all(np.array_equal(one[key], other[key]) for key in one.files)

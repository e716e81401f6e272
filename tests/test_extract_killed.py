"""`isegprobe extract-features` killed with SIGKILL at several moments, then run again with the same command: the
store ends bitwise equal to one extracted without interruption. Real processes, real kills: no exception stands in
for the kill, so zarr's writes, the staging folder of a new store and the `done` record are all exercised as they
are when a job is killed on a cluster."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import zarr
from launch import ctrl_c_when, kill_when

from isegprobe.cache.store import STAGING_SUFFIX

STORE = "vit_small_patch14_dinov2-builtin-train-56.zarr"
ITEMS = 24  # the built-in train split


def command(out: Path) -> list[str]:
    return [
        sys.executable, "-m", "isegprobe", "extract-features",
        "--featurizer", "vit_small_patch14_dinov2", "--weights", "random",
        "--dataset", "builtin", "--split", "train", "--size", "56", "--views", "identity,hflip",
        "--items-per-shard", "1", "--batch-size", "2", "--out", str(out),
    ]  # fmt: skip


def done_shards(store: Path) -> int:
    """Shards of the `done` record on disk; each is written, atomically, after the data of its item."""
    folder = store / "done" / "c"
    return sum(1 for path in folder.rglob("*") if path.is_file()) if folder.is_dir() else 0


def test_sigkill_at_several_moments_then_the_same_command_gives_the_uninterrupted_store(tmp_path: Path) -> None:
    subprocess.run(command(tmp_path / "reference"), check=True, capture_output=True)
    out = tmp_path / "killed"
    store = out / STORE

    being_made = (out / (STORE + STAGING_SUFFIX), store)
    kill_when(command(out), lambda: any(path.exists() for path in being_made), "as the store was being created")
    assert not store.exists() or (store / "zarr.json").is_file()
    for shards in (1, 13):
        kill_when(command(out), lambda shards=shards: done_shards(store) >= shards, f"after {shards} items")
        assert done_shards(store) < ITEMS, "a kill point came after the last item"
    finished = subprocess.run(command(out), capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr

    reference, resumed = zarr.open_group(str(tmp_path / "reference" / STORE), mode="r"), zarr.open_group(str(store))
    assert sorted(resumed.array_keys()) == sorted(reference.array_keys())
    for name in reference.array_keys():
        np.testing.assert_array_equal(resumed[name][:], reference[name][:], err_msg=name)
    assert resumed["done"][:].all()
    assert resumed.attrs["completion"] == reference.attrs["completion"]
    assert not (out / (STORE + STAGING_SUFFIX)).exists()
    assert sorted(os.listdir(out)) == [STORE]


def test_ctrl_c_says_what_is_kept_exits_130_and_the_same_command_goes_on(tmp_path: Path) -> None:
    out = tmp_path / "interrupted"
    store = out / STORE
    returncode, stderr = ctrl_c_when(command(out), lambda: done_shards(store) >= 3)
    assert returncode == 130, stderr
    assert "interrupted; the items finished before it are kept in the store, and the same command goes on" in stderr
    assert "Traceback" not in stderr and "\rError" not in stderr
    assert 3 <= done_shards(store) < ITEMS, "interrupted after the third item and before the last"
    finished = subprocess.run(command(out), capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    assert zarr.open_group(str(store))["done"][:].all()

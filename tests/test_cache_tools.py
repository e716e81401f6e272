"""`isegprobe cache inspect` and `isegprobe cache verify` on a real store."""

from __future__ import annotations

import numpy as np
import zarr
from click.testing import CliRunner
from stores import builtin_store

from isegprobe.commands.cache import cache


def test_inspect_summarizes_and_verify_finds_a_damaged_item(tmp_path):
    store = builtin_store(tmp_path, size=28, views="identity", items_per_shard=4)
    runner = CliRunner()
    inspected = runner.invoke(cache, ["inspect", str(store)])
    assert inspected.exit_code == 0
    assert "vit_small_patch14_dinov2" in inspected.output and "12 of 12 done" in inspected.output
    assert runner.invoke(cache, ["verify", str(store)]).exit_code == 0
    features = zarr.open(str(store), mode="r+")["features"]
    damaged = features[5, 0]
    damaged[0, 0, 0] = np.nan
    features[5, 0] = damaged
    verified = runner.invoke(cache, ["verify", str(store)])
    assert verified.exit_code == 1 and "item 5 (test_005): features are not finite" in verified.output

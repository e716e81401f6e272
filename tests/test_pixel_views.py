"""Stores keep the pixels of a view and its flips and turns once (schema 2), and stores of schema 1 still read."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from click.testing import CliRunner
from stores import SCHEMA1_STORE

from isegprobe.cache import CachedDataset, FeatureStore
from isegprobe.cache.extract import ExtractionRequest, extract
from isegprobe.commands.cache import cache
from isegprobe.data import create_dataset
from isegprobe.data.preprocess import make_view, parse_views
from isegprobe.errors import UserError
from isegprobe.inference.tasks import cached_object_count

SCHEMA1_VIEWS = "identity,hflip,rot90,scale1.5"  # as tests/data/README.md says it was extracted
EVERY_TURN = "identity,hflip,vflip,rot90,rot180,rot270,scale1.5"


def extraction(out: Path, views: str, size: int = 28, **options) -> ExtractionRequest:
    settings = dict(
        featurizer="vit_small_patch14_dinov2", weights="random", dataset="builtin", root=None, split="test",
        size=size, views=views, out=str(out), workers=0, items_per_shard=4,
    )  # fmt: skip
    return ExtractionRequest(**(settings | options))


def assert_same_entries(one: CachedDataset, other: CachedDataset, feature_tolerance: float = 0.0) -> None:
    assert len(one) == len(other)
    for index in range(len(one)):
        first, second = one[index], other[index]
        assert first.keys() == second.keys()
        for key, value in first.items():
            if key == "features" and feature_tolerance:
                torch.testing.assert_close(value, second[key], atol=feature_tolerance, rtol=feature_tolerance)
            elif isinstance(value, torch.Tensor):
                assert value.dtype == second[key].dtype and torch.equal(value, second[key]), (index, key)
            else:
                assert value == second[key], (index, key)


def test_flips_and_turns_read_as_the_views_extraction_made(tmp_path):
    """Letterboxed 320x240 scenes, so that the valid box moves with each flip and turn; the drawn orientations of
    rcrop views are stored as their own pixels."""
    views = f"{EVERY_TURN},rcrop1,rcrop2"
    store = extract(extraction(tmp_path, views, resize="letterbox")).path
    group = zarr.open_group(str(store), mode="r")
    assert group.attrs["schema_version"] == 2
    assert group.attrs["layout"]["pixel_views"] == ["identity", "scale1.5", "rcrop1", "rcrop2"]
    assert group["images"].shape[1] == group["labels"].shape[1] == group["ignore"].shape[1] == 4
    assert group["features"].shape[1] == group["valid_box"].shape[1] == 9
    entries = CachedDataset(store)
    samples = create_dataset("builtin", split="test")
    specs = parse_views(views)
    for index in range(len(entries)):
        entry = entries[index]
        item, view = entry["item"], entry["view"]
        made = make_view(samples[item], specs[view], 28, "letterbox", seed=item * 1009 + view)
        assert np.array_equal(entry["image"].permute(1, 2, 0).numpy(), made.image), (item, specs[view].name)
        assert np.array_equal(entry["labels"].numpy(), made.labels.astype(np.int64)), (item, specs[view].name)
        assert np.array_equal(entry["ignore"].numpy(), made.ignore), (item, specs[view].name)
        assert tuple(entry["valid_box"].tolist()) == made.valid_box, (item, specs[view].name)
        for key in ("image", "labels", "ignore"):
            assert entry[key].is_contiguous(), key
    preloaded = CachedDataset(store)
    preloaded.preload()
    assert_same_entries(entries, preloaded)


def test_preloaded_flipped_entries_do_not_share_memory_with_the_preload(tmp_path):
    store = extract(extraction(tmp_path, "identity,hflip")).path
    entries = CachedDataset(store, views=["hflip"])
    entries.preload()
    first = entries[0]
    first["ignore"].fill_(True)
    first["features"].fill_(0)
    again = entries[0]
    assert not again["ignore"].all() and again["features"].any()


def test_a_schema1_store_reads_as_a_new_extraction_of_the_same_data(tmp_path):
    """The fixture was written by the extraction before pixels were stored once (tests/data/README.md)."""
    old = FeatureStore.open(SCHEMA1_STORE)
    assert old.schema_version == 1 and old.group["images"].shape[1] == 4
    new_path = extract(extraction(tmp_path, SCHEMA1_VIEWS)).path
    assert FeatureStore.open(new_path).group["images"].shape[1] == 2
    # Pixels, masks and boxes are exact; features are float32 CPU arithmetic of another build, rounded to float16.
    assert_same_entries(CachedDataset(SCHEMA1_STORE), CachedDataset(new_path), feature_tolerance=2e-3)
    one, two = CachedDataset(SCHEMA1_STORE), CachedDataset(SCHEMA1_STORE)
    two.preload()
    assert_same_entries(one, two)
    assert cached_object_count(str(SCHEMA1_STORE)) == cached_object_count(str(new_path)) > 0
    runner = CliRunner()
    inspected = {path: runner.invoke(cache, ["inspect", str(path)]).output for path in (SCHEMA1_STORE, new_path)}
    assert "pixels     schema 1: stored for identity, hflip, rot90, scale1.5\n" in inspected[SCHEMA1_STORE]
    new_layout = "pixels     schema 2: stored for identity, scale1.5; hflip, rot90 read from identity's"
    assert new_layout in inspected[new_path]


def test_a_schema1_store_verifies_by_its_own_checksums(tmp_path):
    copy = tmp_path / SCHEMA1_STORE.name
    shutil.copytree(SCHEMA1_STORE, copy)
    runner = CliRunner()
    verified = runner.invoke(cache, ["verify", str(copy)])
    assert verified.exit_code == 0 and "each entry matching its checksum" in verified.output
    images = zarr.open_group(str(copy), mode="r+")["images"]
    image = images[6, 1]
    image[2, 3, 1] ^= 1  # the hflip view's own stored pixels, in a schema-1 store
    images[6, 1] = image
    verified = runner.invoke(cache, ["verify", str(copy)])
    assert verified.exit_code == 1 and "item 6 (test_006): view(s) hflip no longer match" in verified.output


def test_extraction_leaves_a_finished_schema1_store_but_refuses_to_add_to_one(tmp_path):
    copy = tmp_path / SCHEMA1_STORE.name.removeprefix("schema1-")
    shutil.copytree(SCHEMA1_STORE, copy)
    assert extract(extraction(tmp_path, SCHEMA1_VIEWS)).items_extracted == 0, "finished: nothing to do"
    with pytest.raises(UserError, match="a store of schema 1, written by an earlier isegprobe.*--overwrite"):
        extract(extraction(tmp_path, SCHEMA1_VIEWS, repair=True))
    done = zarr.open_group(str(copy), mode="r+")["done"]
    done[5] = 0
    with pytest.raises(UserError, match="cannot finish or repair it"):
        extract(extraction(tmp_path, SCHEMA1_VIEWS))
    assert FeatureStore.open(copy).done_mask().sum() == 11, "refused before anything was written"
    replaced = extract(extraction(tmp_path, SCHEMA1_VIEWS, overwrite=True))
    assert FeatureStore.open(replaced.path).schema_version == 2 and replaced.items_extracted == 12


@pytest.mark.parametrize(
    ("pixel_views", "expected"),
    [
        (["hflip"], "identity included"),
        (["identity"], "every view but the flips and turns of identity, ['scale1.5'] included"),
        ("identity", "a list of view names"),
    ],
)
def test_a_store_whose_pixel_views_were_edited_is_refused_naming_the_key(tmp_path, pixel_views, expected):
    store = extract(extraction(tmp_path, SCHEMA1_VIEWS)).path
    metadata = json.loads((store / "zarr.json").read_text())
    metadata["attributes"]["layout"]["pixel_views"] = pixel_views
    (store / "zarr.json").write_text(json.dumps(metadata))
    with pytest.raises(UserError, match="attrs layout.pixel_views: expected") as refused:
        CachedDataset(store)
    assert expected in str(refused.value)

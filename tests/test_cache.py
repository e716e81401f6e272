"""Stage one end to end: extraction into a Zarr v3 store, reading it back, resuming, refusing mixed stores."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from dataset_trees import box, sbd_tree, use_dataset_config, write_image, write_mask

from cache_tools import verify_store
from isegprobe.cache import CachedDataset, FeatureStore
from isegprobe.cache.extract import ExtractionRequest, extract
from isegprobe.cache.schema import COMPRESSORS, check_same_featurizer
from isegprobe.cache.store import FeatureStore as StoreClass
from isegprobe.data import create_dataset
from isegprobe.data.preprocess import make_view, normalize_images, orient, parse_views
from isegprobe.devices import featurizer_autocast
from isegprobe.errors import UserError
from isegprobe.featurizers import create_featurizer
from isegprobe.training.store_checks import (
    OldLabelsWarning,
    UniformDrawsWarning,
    warn_when_labels_predate_crop_filters,
    warn_when_sbd_is_drawn_uniformly,
)

FEATURIZER = "vit_small_patch14_dinov2"


def request(out, **overrides) -> ExtractionRequest:
    base = dict(
        featurizer=FEATURIZER,
        weights="random",
        dataset="builtin",
        root=None,
        split="test",
        size=56,
        views="identity,hflip",
        batch_size=4,
        device="cpu",
        out=str(out),
        workers=0,
        items_per_shard=4,
    )
    base.update(overrides)
    return ExtractionRequest(**base)


def independent_features(weights: str, images_uint8: np.ndarray) -> np.ndarray:
    """A plain timm forward on the stored images: normalized patch tokens, prefix tokens dropped."""
    model = create_featurizer(FEATURIZER, weights=weights).model
    mean = torch.tensor(model.pretrained_cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(model.pretrained_cfg["std"]).view(1, 3, 1, 1)
    x = (torch.from_numpy(images_uint8).permute(0, 3, 1, 2).float() / 255 - mean) / std
    with torch.no_grad():
        tokens = model.forward_features(x)[:, model.num_prefix_tokens :]
    side = images_uint8.shape[1] // 14
    return tokens.reshape(len(x), side, side, -1).permute(0, 3, 1, 2).numpy()


def test_grabcut_three_real_images(grabcut_three, tmp_path):
    result = extract(request(tmp_path / "out", dataset="grabcut", root=str(grabcut_three), size=112))
    root = zarr.open(str(result.path), mode="r")
    features = root["features"]
    assert features.dtype == np.float16 and features.shape == (3, 2, 384, 8, 8)
    images = root["images"][:]
    assert images.shape == (3, 1, 112, 112, 3), "the hflip view keeps no pixels: they are the identity view's"
    entries = CachedDataset(result.path)
    assert np.array_equal(entries[1]["image"].permute(1, 2, 0).numpy(), images[0, 0, :, ::-1]), "read as the mirror"
    views = np.stack([images[:, 0], images[:, 0, :, ::-1]], axis=1)
    expected = independent_features("random", views.reshape(-1, 112, 112, 3)).reshape(3, 2, 384, 8, 8)
    np.testing.assert_allclose(features[:].astype(np.float32), expected, rtol=1e-2, atol=1e-2)
    ignore = root["ignore"][:]
    assert ignore[:, 0].any(axis=(1, 2)).sum() >= 2, "GrabCut's ignore band survives the resize"
    dataset = create_dataset("grabcut", grabcut_three)
    assert root.attrs["item_ids"] == dataset.ids()
    original = root["original_size"][:]
    assert [tuple(size) for size in original] == [dataset[i].image.shape[:2] for i in range(3)]


def test_builtin_store_layout_attrs_and_masks(tmp_path):
    result = extract(request(tmp_path))
    metadata = json.loads((result.path / "zarr.json").read_text())
    attrs = metadata["attributes"]
    assert attrs["featurizer"]["name"] == FEATURIZER and attrs["views"] == ["identity", "hflip"]
    assert attrs["preprocessing"]["size"] == 56 and attrs["completion"]["items_done"] == 12
    root = zarr.open(str(result.path), mode="r")
    assert dict(root.attrs) == attrs
    feature_meta = json.loads((result.path / "features" / "zarr.json").read_text())
    sharding = feature_meta["codecs"][0]
    assert sharding["name"] == "sharding_indexed"
    assert sharding["configuration"]["chunk_shape"] == [1, 1, 384, 4, 4]
    assert feature_meta["chunk_grid"]["configuration"]["chunk_shape"] == [4, 2, 384, 4, 4]
    assert any(
        codec["name"] == "blosc" and codec["configuration"]["cname"] == "zstd"
        for codec in sharding["configuration"]["codecs"]
    )
    sample = create_dataset("builtin", split="test")[5]
    view = make_view(sample, parse_views("identity")[0], 56, "stretch", seed=0)
    assert np.array_equal(root["labels"][5, 0], view.labels)
    assert np.array_equal(root["images"][5, 0], view.image)


def test_cached_dataset_yields_the_stored_tensors(tmp_path):
    result = extract(request(tmp_path))
    dataset = CachedDataset(result.path)
    assert len(dataset) == 24
    entry = dataset[7]
    root = zarr.open(str(result.path), mode="r")
    assert (entry["item"], entry["view"]) == (3, 1)
    assert entry["features"].dtype == torch.float16 and entry["image"].shape == (3, 56, 56)
    assert torch.equal(entry["features"], torch.from_numpy(root["features"][3, 1]))
    mirrored = np.ascontiguousarray(root["images"][3, 0][:, ::-1])  # hflip: the identity view's pixels, mirrored
    assert torch.equal(entry["image"].permute(1, 2, 0), torch.from_numpy(mirrored))
    assert torch.equal(entry["labels"], torch.from_numpy(root["labels"][3, 0][:, ::-1].astype(np.int64)))
    only_identity = CachedDataset(result.path, views=["identity"])
    assert len(only_identity) == 12 and only_identity[7]["view"] == 0
    assert dataset.preprocessing["mean"] == list(create_featurizer(FEATURIZER, "random").mean)


DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")),
]


@pytest.mark.parametrize("device", DEVICES)
def test_features_queued_ahead_are_those_of_a_forward_waited_for(tmp_path, device):
    """The loop queues each shard's forward and goes on (on a GPU the copies back are pinned and not waited for);
    the stored features must be what a forward of each batch, waited for, gives: same batches, same values."""
    result = extract(request(tmp_path, device=device, workers=2, batch_size=3))
    root = zarr.open(str(result.path), mode="r")
    identity = root["images"][:, 0]
    images = np.stack([identity, np.ascontiguousarray(identity[:, :, ::-1])], axis=1)  # views: identity, hflip
    featurizer = create_featurizer(FEATURIZER, "random").to(device)
    for start in range(0, 12, 4):  # a shard: 4 items, 8 images, in batches of 3, 3 and 2
        shard = torch.from_numpy(images[start : start + 4]).flatten(0, 1)
        stored = torch.from_numpy(root["features"][start : start + 4]).flatten(0, 1)
        assert torch.equal(stored, waited_forward(featurizer, shard, 3, device)), f"shard at item {start}"


def waited_forward(featurizer, images: torch.Tensor, batch_size: int, device: str) -> torch.Tensor:
    """uint8 [M, S, S, 3] -> float16 features, batch by batch, each forward waited for."""
    expected = []
    for batch in images.split(batch_size):
        pixels = batch.to(device).permute(0, 3, 1, 2)
        with torch.no_grad(), featurizer_autocast(torch.device(device)):
            features = featurizer(normalize_images(pixels, featurizer.mean, featurizer.std))
        expected.append(features.to(torch.float16).cpu())
    return torch.cat(expected)


@pytest.mark.parametrize("device", DEVICES)
def test_each_flip_and_turn_is_featurized_from_the_identity_pixels_so_oriented(tmp_path, device):
    """The featurizer's images of the views that keep no pixels are made on the device from the identity view's;
    each view's features must be the featurizer's on the stored pixels oriented as `orient` reads them."""
    views = "identity,hflip,vflip,rot90,rot180,rot270"
    result = extract(request(tmp_path, device=device, workers=2, views=views, batch_size=5))
    root = zarr.open(str(result.path), mode="r")
    assert root["images"].shape[1] == 1, "only the identity view keeps pixels"
    identity = root["images"][:, 0]
    specs = parse_views(views)
    images = np.stack([[orient(item, spec) for spec in specs] for item in identity])
    featurizer = create_featurizer(FEATURIZER, "random").to(device)
    for start in range(0, 12, 4):  # a shard: 4 items, 24 images, in batches of 5
        shard = torch.from_numpy(images[start : start + 4]).flatten(0, 1)
        stored = torch.from_numpy(root["features"][start : start + 4]).flatten(0, 1)
        assert torch.equal(stored, waited_forward(featurizer, shard, 5, device)), f"shard at item {start}"


def finish_interrupted_after(shards: int):
    """`FeatureStore.finish_items` that writes `shards` shards, then stops the extraction as a kill would."""
    original_finish = StoreClass.finish_items
    calls = {"count": 0}

    def interrupted_finish(self, items, arrays, features, pixel_sums):
        if calls["count"] == shards:
            raise KeyboardInterrupt
        calls["count"] += 1
        original_finish(self, items, arrays, features, pixel_sums)

    return interrupted_finish


def blosc_configurations(store: Path) -> set[str]:
    """Each array's Blosc settings, as its zarr.json gives them."""
    found, codecs = set(), []
    for metadata in store.glob("*/zarr.json"):
        codecs += json.loads(metadata.read_text())["codecs"]
    while codecs:
        codec = codecs.pop()
        if codec["name"] == "sharding_indexed":
            codecs += codec["configuration"]["codecs"]
        elif codec["name"] == "blosc":
            found.add(json.dumps(codec["configuration"], sort_keys=True))
    return found


def test_a_store_whose_blosc_chose_its_blocks_is_finished_with_them(tmp_path, monkeypatch):
    """Stores made before the 1 MiB Blosc blocks keep Blosc's own choice (blocksize 0) in their arrays' metadata: an
    interrupted one is finished with it, to the values a new store gets, and verifies."""
    reference = extract(request(tmp_path / "reference"))
    configurations = blosc_configurations(reference.path)
    assert configurations and all('"blocksize": 1048576' in codec for codec in configurations)
    before_blocks = {name: value for name, value in COMPRESSORS["zstd"].items() if name != "blocksize"}
    with monkeypatch.context() as patched:
        patched.setitem(COMPRESSORS, "zstd", before_blocks)
        patched.setattr(StoreClass, "finish_items", finish_interrupted_after(1))
        with pytest.raises(KeyboardInterrupt):
            extract(request(tmp_path / "old"))
    resumed = extract(request(tmp_path / "old"))
    assert resumed.items_extracted == 8
    configurations = blosc_configurations(resumed.path)
    assert configurations and all('"blocksize": 0' in codec for codec in configurations)
    first, second = zarr.open(str(reference.path), mode="r"), zarr.open(str(resumed.path), mode="r")
    for name in ("features", "images", "labels", "ignore", "valid_box", "crop_box", "original_size", "checksum"):
        assert np.array_equal(first[name][:], second[name][:]), name
    assert verify_store(resumed.path) == []


def test_interrupted_extraction_resumes_to_the_same_store(tmp_path, monkeypatch):
    reference = extract(request(tmp_path / "reference"))
    original_finish = StoreClass.finish_items
    monkeypatch.setattr(StoreClass, "finish_items", finish_interrupted_after(2))
    with pytest.raises(KeyboardInterrupt):
        extract(request(tmp_path / "resumed"))
    monkeypatch.setattr(StoreClass, "finish_items", original_finish)
    partial = FeatureStore.open(reference.path.parents[1] / "resumed" / reference.path.name)
    assert partial.done_mask().tolist() == [True] * 8 + [False] * 4
    with pytest.raises(UserError, match=r"4 of 12 items are not extracted yet \(8 of 12 done\)"):
        CachedDataset(partial.path)
    with pytest.raises(UserError, match=r"item\(s\) 10 of those asked for are not extracted yet \(8 of 12 done\)"):
        CachedDataset(partial.path, items=[3, 10])
    resumed = extract(request(tmp_path / "resumed"))
    assert resumed.items_extracted == 4
    first, second = zarr.open(str(reference.path), mode="r"), zarr.open(str(resumed.path), mode="r")
    for name in ("features", "images", "labels", "ignore", "valid_box", "crop_box", "original_size", "done"):
        assert np.array_equal(first[name][:], second[name][:]), name
    again = extract(request(tmp_path / "resumed"))
    assert again.items_extracted == 0
    assert again.loop is None, "nothing was extracted, so there is no loop to time"
    loop = reference.loop
    assert loop.featurizer > 0 and loop.waiting_for_images >= 0 and loop.waiting_for_writes >= 0
    assert loop.waiting_for_images + loop.featurizer + loop.waiting_for_writes <= loop.total
    assert 0 < loop.thread_cpu["featurizer"], "on a CPU the loop's thread does the device's work: it takes CPU time"


def test_a_store_removed_while_it_is_written_stops_the_extraction_naming_it(tmp_path, monkeypatch):
    """A store's folder removed mid-run (a scratch disk cleaned): tensorstore makes the chunk folders it writes into,
    so the run went on filling a folder of the store's name with chunks that no metadata describes, and ended in a
    KeyError. The next shard's write refuses instead, naming the store, and the same command extracts it anew."""
    original_finish = StoreClass.finish_items
    written, calls = threading.Semaphore(0), {"count": 0}

    def finish_removing_the_store_before_the_third_shard(self, items, arrays, features, pixel_sums):
        calls["count"] += 1
        if calls["count"] == 3:
            for _ in range(2):  # the writer threads have written the first two shards
                assert written.acquire(timeout=60)
            shutil.rmtree(self.path)
        original_finish(self, items, arrays, features, pixel_sums)
        written.release()

    monkeypatch.setattr(StoreClass, "finish_items", finish_removing_the_store_before_the_third_shard)
    with pytest.raises(UserError, match=r"-56\.zarr: the store was removed or moved while this command was writing"):
        extract(request(tmp_path))
    assert calls["count"] == 3
    assert [path.name for path in tmp_path.iterdir()] == [], "nothing written under the removed store's name"
    monkeypatch.setattr(StoreClass, "finish_items", original_finish)
    again = extract(request(tmp_path, items_per_shard=None))  # as the command line without the two options
    assert again.items_extracted == 12
    assert verify_store(again.path) == []


def test_refuses_a_store_made_differently(tmp_path):
    extract(request(tmp_path))
    weights = tmp_path / "w.pth"
    torch.save(create_featurizer(FEATURIZER, "random").model.state_dict(), weights)
    with pytest.raises(UserError, match="weights_sha256"):
        extract(request(tmp_path, weights=str(weights)))
    with pytest.raises(UserError, match="views"):
        extract(request(tmp_path, views="identity"))
    replaced = extract(request(tmp_path, views="identity", overwrite=True))
    assert replaced.items_extracted == 12
    assert zarr.open(str(replaced.path), mode="r")["features"].shape[1] == 1


def custom_tree(root: Path, images: int) -> Path:
    for index in range(images):
        write_image(root / "images" / f"im{index}.png", seed=index)
        write_mask(root / "masks" / f"im{index}.png", box(24, 32, 4, 4, 16, 20))
    return root


def test_overwrite_keeps_the_old_store_whole_until_its_replacement_is_done(tmp_path, capsys):
    """--overwrite extracts beside the store it replaces: a run that fails half way leaves the old store as it was,
    and the same command resumes the replacement and then swaps it in; the command without --overwrite says it is
    there."""
    root = custom_tree(tmp_path / "data", images=8)
    common = dict(dataset="custom", root=str(root), items_per_shard=2)
    old = extract(request(tmp_path / "cache", **common)).path
    old_features = zarr.open_group(str(old), mode="r")["features"][:]
    good = (root / "images" / "im5.png").read_bytes()
    (root / "images" / "im5.png").write_bytes(good[:40])  # a shard after two finished ones cannot be read
    with pytest.raises(UserError, match=r"(?s)im5\.png: .*The items extracted so far are kept: fix the file"):
        extract(request(tmp_path / "cache", views="identity,hflip,vflip", overwrite=True, **common))
    kept = FeatureStore.open(old)
    assert kept.num_views == 2 and kept.done_mask().all()
    np.testing.assert_array_equal(zarr.open_group(str(old), mode="r")["features"][:], old_features)
    replacement = old.with_name(old.name + ".replacing")
    assert FeatureStore.open(replacement).done_mask().sum() == 4

    with pytest.raises(UserError, match=r"(?s)views: .*replacing beside it holds an --overwrite made as this run asks"):
        extract(request(tmp_path / "cache", views="identity,hflip,vflip", **common))  # the same without --overwrite
    capsys.readouterr()
    assert extract(request(tmp_path / "cache", **common)).items_extracted == 0, "the old store is whole"
    assert f"note: {replacement} holds an --overwrite of this store that did not finish" in capsys.readouterr().err
    (root / "images" / "im5.png").write_bytes(good)
    resumed = extract(request(tmp_path / "cache", views="identity,hflip,vflip", overwrite=True, **common))
    assert resumed.path == old and resumed.items_extracted == 4, "the replacement's four finished items are kept"
    assert FeatureStore.open(old).num_views == 3 and verify_store(old) == []
    assert [path.name for path in (tmp_path / "cache").iterdir() if not path.name.endswith(".lock")] == [old.name]


def test_a_swap_stopped_between_its_renames_is_finished_by_the_next_run(tmp_path):
    """A crash between `put_in_place`'s two renames leaves the old store as NAME.replaced and the finished new one as
    NAME.replacing, nothing under the store's own name: readers say how to go on, and the next run swaps them."""
    old = extract(request(tmp_path / "cache")).path
    new = extract(request(tmp_path / "elsewhere", views="identity")).path
    old.rename(old.with_name(old.name + ".replaced"))
    new.rename(old.with_name(old.name + ".replacing"))
    with pytest.raises(UserError, match=r"\.replaced is beside it: .*run it again to finish the swap"):
        FeatureStore.open(old)
    finished = extract(request(tmp_path / "cache", views="identity"))
    assert finished.items_extracted == 0 and finished.repaired == [
        f"{old.name}: an earlier --overwrite stopped between swapping the stores; its new store is now in place"
    ]
    assert FeatureStore.open(old).num_views == 1 and verify_store(old) == []
    assert [path.name for path in (tmp_path / "cache").iterdir() if not path.name.endswith(".lock")] == [old.name]


def test_the_cache_commands_name_a_store_being_created_and_one_that_is_not_there(tmp_path):
    """A store killed while it was being created is only NAME.zarr.creating: `cache verify NAME.zarr` gave click's
    "Directory ... does not exist" (exit 2) without a word of it."""
    from click.testing import CliRunner

    from isegprobe.cli import main

    made = extract(request(tmp_path / "cache")).path
    staged = made.rename(made.with_name(made.name + ".creating"))
    for command in ("inspect", "verify", "stats"):
        result = CliRunner().invoke(main, ["cache", command, str(made)])
        assert result.exit_code == 1, result.output
        assert f"{made}: not there yet, but {staged.name} is beside it" in result.output
    result = CliRunner().invoke(main, ["cache", "verify", str(tmp_path / "nowhere.zarr")])
    assert result.exit_code == 1
    assert f"{tmp_path / 'nowhere.zarr'} does not exist: not a feature store" in result.output


def test_a_folder_of_stores_given_as_a_store_names_the_stores_in_it(tmp_path):
    """`train --store cache/` (the extract-features --out folder) was told to create a store with extract-features,
    though the store it meant was in that folder."""
    made = extract(request(tmp_path / "cache")).path
    with pytest.raises(UserError) as error:
        FeatureStore.open(tmp_path / "cache")
    assert str(error.value) == (
        f"{tmp_path / 'cache'}: a folder of feature stores ({made.name}), not a store itself; give one of them"
    )
    with pytest.raises(UserError, match=r"not a feature store \(no zarr\.json\); create one with"):
        FeatureStore.open(tmp_path)


def test_a_swap_whose_replacement_is_gone_puts_the_old_store_back(tmp_path):
    old = extract(request(tmp_path / "cache")).path
    old.rename(old.with_name(old.name + ".replaced"))
    again = extract(request(tmp_path / "cache"))
    assert again.items_extracted == 0 and "the old store is back in place" in again.repaired[0]
    assert FeatureStore.open(old).num_views == 2 and verify_store(old) == []


def test_overwrite_through_a_link_replaces_the_link_and_leaves_its_target(tmp_path):
    elsewhere = extract(request(tmp_path / "elsewhere")).path
    link = tmp_path / "cache" / elsewhere.name
    link.parent.mkdir()
    link.symlink_to(elsewhere, target_is_directory=True)
    replaced = extract(request(tmp_path / "cache", views="identity", overwrite=True))
    assert replaced.path == link and not link.is_symlink() and FeatureStore.open(link).num_views == 1
    assert FeatureStore.open(elsewhere).num_views == 2 and verify_store(elsewhere) == []


def test_imagenet_normalized_features_are_their_own_store_never_mixed_with_the_models(tmp_path):
    """iSegProbe's input rule (ImageNet statistics for every backbone) gives other features than the model's own
    statistics: a store of its own name, its own provenance, and never read as the other kind."""
    own = extract(request(tmp_path, featurizer="vit_small_patch16_224", size=64)).path
    imagenet = extract(request(tmp_path, featurizer="vit_small_patch16_224", size=64, normalization="imagenet")).path
    assert own.name == "vit_small_patch16_224-builtin-test-64.zarr"
    assert imagenet.name == "vit_small_patch16_224-imagenet_norm-builtin-test-64.zarr"
    own_attrs, imagenet_attrs = FeatureStore.open(own).attrs, FeatureStore.open(imagenet).attrs
    assert own_attrs["preprocessing"]["mean"] == pytest.approx([0.5, 0.5, 0.5])
    assert imagenet_attrs["preprocessing"]["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert imagenet_attrs["featurizer"]["normalization"] == "imagenet"
    own_features = np.asarray(zarr.open(str(own), mode="r")["features"][0, 0])
    imagenet_features = np.asarray(zarr.open(str(imagenet), mode="r")["features"][0, 0])
    assert np.abs(own_features.astype(np.float32) - imagenet_features).max() > 1e-2
    with pytest.raises(UserError, match="normalization: checkpoint 'imagenet', .* 'model'"):
        check_same_featurizer(imagenet_attrs["featurizer"], own_attrs["featurizer"], str(own))
    legacy = {key: value for key, value in own_attrs["featurizer"].items() if key != "normalization"}
    check_same_featurizer(legacy, own_attrs["featurizer"], str(own))  # written before the key: the model's own


def test_size_must_be_a_multiple_of_the_patch(tmp_path):
    with pytest.raises(UserError, match="--size 50"):
        extract(request(tmp_path, size=50))


def test_lz4_codec_stores_the_same_features(tmp_path):
    zstd = extract(request(tmp_path / "zstd"))
    lz4 = extract(request(tmp_path / "lz4", codec="lz4"))
    metadata = json.loads((lz4.path / "features" / "zarr.json").read_text())
    inner = metadata["codecs"][0]["configuration"]["codecs"]
    assert any(codec["name"] == "blosc" and codec["configuration"]["cname"] == "lz4" for codec in inner)
    assert FeatureStore.open(lz4.path).attrs["layout"]["compressor"]["cname"] == "lz4"
    np.testing.assert_array_equal(zarr.open(str(zstd.path))["features"][:], zarr.open(str(lz4.path))["features"][:])


def test_a_resumed_store_keeps_its_layout_and_says_so_where_another_was_asked(tmp_path, capsys):
    """Shard size and codec are a new store's: a resumed one's items already lie in its own. Asked for others, the
    command keeps them and says so; asked for nothing, it keeps them without a word."""
    first = extract(request(tmp_path, items_per_shard=4, codec="lz4"))
    capsys.readouterr()
    again = extract(request(tmp_path, items_per_shard=None))  # as the command line without the two options
    assert again.items_extracted == 0 and "note" not in capsys.readouterr().err
    extract(request(tmp_path, items_per_shard=6, codec="zstd"))
    note = capsys.readouterr().err
    assert f"{first.path} keeps the --items-per-shard 4 (asked: 6) and --codec lz4 (asked: zstd)" in note
    extract(request(tmp_path, items_per_shard=4, codec="lz4"))
    assert "note" not in capsys.readouterr().err
    store = FeatureStore.open(first.path)
    assert store.items_per_shard == 4 and store.attrs["layout"]["compressor"]["cname"] == "lz4"


def test_a_full_disk_under_the_feature_writer_is_the_os_error_naming_the_store(tmp_path):
    """Tensorstore reports a failed write as a ValueError; the writer raises it as the OSError the CLI words as a full
    disk. The child process may write files of 4 KiB at most (EFBIG, the same path as ENOSPC)."""
    store = extract(request(tmp_path))
    child = f"""
import errno, resource, signal
import numpy as np
from isegprobe.cache.array_writer import ArrayWriter
from pathlib import Path
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
features = np.random.default_rng(0).random((4, 2, 384, 4, 4)).astype(np.float16)  # does not compress to 4 KiB
try:
    ArrayWriter(Path({str(store.path)!r})).write(slice(0, 4), {{"features": features}})
except OSError as error:
    print(error.errno == errno.EFBIG, error.filename)
"""
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["True", str(store.path)], done.stderr


def test_a_store_records_its_loader_options_and_is_not_mixed_with_other_ones(tmp_path, monkeypatch):
    """RITM's SBD training filter shapes the labels a store holds: the store says which options made them, and
    resuming it under other options is refused as another featurizer would be."""
    root = sbd_tree(tmp_path / "SBD")
    use_dataset_config(monkeypatch, tmp_path, options={"sbd": {"train": {"buggy_mask_threshold": 0.08}}})
    sbd = request(tmp_path / "cache", dataset="sbd", root=str(root), split="train", views="identity")
    path = extract(sbd).path
    assert FeatureStore.open(path).attrs["dataset"]["options"] == {"buggy_mask_threshold": 0.08}
    use_dataset_config(monkeypatch, tmp_path, options={"sbd": {"train": {"buggy_mask_threshold": 0.5}}})
    with pytest.raises(UserError, match=r"dataset loader options: store has \{'buggy_mask_threshold': 0.08\}"):
        extract(sbd)


def test_training_on_an_sbd_store_whose_labels_lost_small_objects_says_so():
    with pytest.warns(OldLabelsWarning, match="Extract it again"):
        warn_when_labels_predate_crop_filters({"name": "sbd", "split": "train", "num_items": 8498})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_when_labels_predate_crop_filters({"name": "sbd", "split": "train", "options": {}})
        warn_when_labels_predate_crop_filters({"name": "sbd", "split": "val", "num_items": 2857})


def test_training_on_sbd_train_without_its_image_weights_says_so():
    with pytest.warns(UniformDrawsWarning, match=r"data\.sample_weights=PATH/sbd_samples_weights\.pkl"):
        warn_when_sbd_is_drawn_uniformly({"name": "sbd", "split": "train"}, None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_when_sbd_is_drawn_uniformly({"name": "sbd", "split": "train"}, "assets/sbd_samples_weights.pkl")
        warn_when_sbd_is_drawn_uniformly({"name": "builtin", "split": "train"}, None)


def test_shards_hold_at_most_the_datasets_items(tmp_path):
    """A shard is made with room for all its items, so a number far above the dataset's would fill a disk."""
    path = extract(request(tmp_path, items_per_shard=100_000_000)).path
    assert FeatureStore.open(path).items_per_shard == 12
    assert FeatureStore.open(path).nbytes_on_disk() < 10 << 20

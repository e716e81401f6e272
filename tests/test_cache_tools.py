"""`isegprobe cache inspect`, `verify` and `stats` on a real store."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import zarr
from click.testing import CliRunner
from stores import SCHEMA1_STORE, builtin_store

from cache_tools.stats import feature_stats
from isegprobe.cache.extract import ExtractionRequest, extract
from isegprobe.commands.cache import cache


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small finished store, extracted once for the tests that copy it and damage the copy."""
    return builtin_store(tmp_path_factory.mktemp("pristine"), size=28, views="identity", items_per_shard=4)


def copied(store: Path, folder: Path) -> Path:
    return Path(shutil.copytree(store, folder / store.name, symlinks=True))


def edit_attrs(store: Path, change: Callable[[dict], None]) -> None:
    """Change the attrs in the store's zarr.json by hand, as an edit or a half-copy would."""
    metadata = json.loads((store / "zarr.json").read_text())
    change(metadata["attributes"])
    (store / "zarr.json").write_text(json.dumps(metadata))


def listed_rows(output: str) -> list[list[str]]:
    """The cells of `cache ls`'s rows below its header."""
    return [[cell.strip() for cell in line.split("|")[1:-1]] for line in output.splitlines()[2:]]


def test_inspect_summarizes_and_verify_finds_a_damaged_item(tmp_path):
    store = builtin_store(tmp_path, size=28, views="identity", items_per_shard=4)
    runner = CliRunner()
    inspected = runner.invoke(cache, ["inspect", str(store)])
    assert inspected.exit_code == 0
    assert "vit_small_patch14_dinov2  weights random  normalization model\n" in inspected.output
    assert "12 of 12 done" in inspected.output
    assert "codec      blosc zstd level 1, bitshuffle" in inspected.output
    assert "pixels     schema 2: stored for identity\n" in inspected.output
    features_line = next(line for line in inspected.output.splitlines() if line.strip().startswith("features"))
    raw_mib = 12 * 1 * 384 * 2 * 2 * 2 / 2**20  # items x views x [384, 2, 2] float16
    assert f"raw {raw_mib:8.2f} MiB" in features_line and "stored" in features_line
    names = [line.split()[0] for line in inspected.output.splitlines()[9:]]
    assert names[:4] == ["features", "images", "labels", "ignore"], "largest first"
    assert runner.invoke(cache, ["info", str(store)]).output == inspected.output
    verified = runner.invoke(cache, ["verify", str(store)])
    assert verified.exit_code == 0 and "consistent (12 of 12 items finished" in verified.output
    features = zarr.open(str(store), mode="r+")["features"]
    damaged = features[5, 0]
    damaged[0, 0, 0] = np.nan
    features[5, 0] = damaged
    verified = runner.invoke(cache, ["verify", str(store)])
    assert verified.exit_code == 1 and "item 5 (test_005): features are not finite" in verified.output


def test_verify_finds_a_done_record_that_lost_its_items(tmp_path):
    """With the done array's chunk gone, every item reads as unfinished, and there is nothing left to check it
    against but the count the extraction wrote into the attrs."""
    store = builtin_store(tmp_path, size=28, views="identity", items_per_shard=4)
    shutil.rmtree(store / "done" / "c")
    verified = CliRunner().invoke(cache, ["verify", str(store)])
    assert verified.exit_code == 1
    assert "the done record holds 0 finished items where the extraction that wrote the store counted 12" in (
        verified.output
    )


def test_ls_says_when_the_record_of_finished_items_does_not_hold(pristine, tmp_path):
    """It said 12/12 of a store whose lost shard file makes every reader refuse it, and 0/12 without a word of one
    that lost the record's own chunk."""
    lost_shard, lost_record = copied(pristine, tmp_path / "a"), copied(pristine, tmp_path / "b")
    next(path for path in (lost_shard / "features" / "c").rglob("*") if path.is_file()).unlink()
    shutil.rmtree(lost_record / "done" / "c")
    listed = CliRunner().invoke(cache, ["ls", str(tmp_path)])
    assert listed.exit_code == 0, listed.output
    cells = {row[0].split("/")[0]: row[6] for row in listed_rows(listed.output)}
    assert cells == {
        "a": "12/12, 4 lack chunk files (cache verify)",
        "b": "0/12, the extraction counted 12 (cache verify)",
    }
    intact = CliRunner().invoke(cache, ["ls", str(pristine.parent)])
    assert listed_rows(intact.output)[0][6] == "12/12"


@pytest.mark.parametrize("array", ["crop_box", "original_size"])
def test_verify_finds_a_missing_chunk_of_the_arrays_no_checksum_covers(tmp_path, array):
    """Where each view lies in its image: no checksum covers it, yet every reader refuses a store without it."""
    store = builtin_store(tmp_path, size=28, views="identity", items_per_shard=4)
    shutil.rmtree(store / array / "c")
    verified = CliRunner().invoke(cache, ["verify", str(store)])
    assert verified.exit_code == 1
    assert f"item 0 (test_000): the {array} chunk is missing" in verified.output


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--root", "elsewhere"], "--root: the dataset's folder for --images, which this command was not given"),
        (["--weights", "hub"], "--weights: the featurizer's weights for --recompute N, which this command was not"),
    ],
)
def test_verify_refuses_an_option_that_only_another_one_reads(pristine, options, message):
    """They checked nothing and said nothing: a user who meant --images or --recompute believed it done."""
    verified = CliRunner().invoke(cache, ["verify", str(pristine), *options])
    assert verified.exit_code == 1
    assert message in verified.output and "consistent" not in verified.output


def test_stats_are_the_stores_channel_moments_and_find_high_norm_tokens(tmp_path):
    store = builtin_store(tmp_path, size=56, views="identity,hflip", items_per_shard=4)
    features = zarr.open(str(store), mode="r+")["features"]
    item = features[3, 1]
    item[:, 0, :] *= 4.0  # one row of 4 tokens with four times the usual norm
    features[3, 1] = item
    values = np.asarray(features[:]).astype(np.float64)  # [12, 2, 384, 4, 4]
    vectors = np.moveaxis(values, 2, -1).reshape(-1, 384)

    stats = feature_stats(store)
    assert (stats.items, stats.views, stats.tokens) == (12, 2, 12 * 2 * 16)
    np.testing.assert_allclose(stats.channel_mean, vectors.mean(axis=0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(stats.channel_std, vectors.std(axis=0), rtol=1e-6)
    norms = np.linalg.norm(vectors, axis=1)
    assert stats.norm_max == pytest.approx(norms.max())
    assert stats.norm_quantiles["p50"] == pytest.approx(np.median(norms))
    assert stats.high_norm_fraction == pytest.approx(4 / len(norms))

    out = tmp_path / "stats" / "new" / "stats.json"  # folders that do not exist yet are made
    shown = CliRunner().invoke(cache, ["stats", str(store), "--out", str(out)])
    assert shown.exit_code == 0, shown.output
    assert "1.04 % of tokens above 2x the median norm" in shown.output
    assert json.loads(out.read_text())["channel_std"] == pytest.approx(stats.channel_std)


def test_stats_never_write_into_the_store_they_read(tmp_path):
    store = builtin_store(tmp_path, size=28, views="identity", items_per_shard=4)
    metadata = (store / "zarr.json").read_bytes()
    refused = CliRunner().invoke(cache, ["stats", str(store), "--out", str(store / "zarr.json")])
    assert refused.exit_code == 1 and "inside the feature store" in refused.output
    assert (store / "zarr.json").read_bytes() == metadata


def test_ls_lists_every_store_under_a_root_and_nothing_inside_them(tmp_path):
    builtin_store(tmp_path / "cache", size=28, views="identity")
    builtin_store(tmp_path / "cache" / "other", split="train", size=56, views="identity")
    (tmp_path / "cache" / "notes").mkdir()
    listed = CliRunner().invoke(cache, ["ls", str(tmp_path / "cache")])
    assert listed.exit_code == 0, listed.output
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in listed.output.splitlines()]
    assert rows[0] == ["store", "featurizer", "weights", "dataset", "views", "size", "items done", "MiB"]
    assert [row[:7] for row in rows[2:]] == [
        ["other/vit_small_patch14_dinov2-builtin-train-56.zarr", "vit_small_patch14_dinov2", "random",
         "builtin/train", "identity", "56", "24/24"],
        ["vit_small_patch14_dinov2-builtin-test-28.zarr", "vit_small_patch14_dinov2", "random", "builtin/test",
         "identity", "28", "12/12"],
    ]  # fmt: skip
    empty = CliRunner().invoke(cache, ["ls", str(tmp_path / "cache" / "notes")])
    assert empty.exit_code == 1 and "no feature store in it or below it" in empty.output


def test_ls_gives_a_damaged_store_its_row_and_lists_the_others(tmp_path):
    builtin_store(tmp_path / "cache", size=28, views="identity")
    damaged = builtin_store(tmp_path / "cache" / "damaged", size=28, views="identity")
    (damaged / "zarr.json").write_text("{")
    lost_record = builtin_store(tmp_path / "cache" / "lost", size=28, views="identity")
    (lost_record / "done" / "zarr.json").unlink()
    listed = CliRunner().invoke(cache, ["ls", str(tmp_path / "cache")])
    assert listed.exit_code == 0, listed.output
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in listed.output.splitlines()[2:]]
    assert [row[0] for row in rows] == [
        "damaged/vit_small_patch14_dinov2-builtin-test-28.zarr",
        "lost/vit_small_patch14_dinov2-builtin-test-28.zarr",
        "vit_small_patch14_dinov2-builtin-test-28.zarr",
    ]
    assert rows[0][1].startswith("unreadable: ") and rows[1][1].startswith("unreadable: ")
    assert rows[2][1:3] == ["vit_small_patch14_dinov2", "random"]


def test_an_array_inside_a_store_is_not_taken_for_a_store(tmp_path):
    store = builtin_store(tmp_path, size=28, views="identity")
    inspected = CliRunner().invoke(cache, ["inspect", str(store / "features")])
    assert inspected.exit_code == 1 and "a Zarr array, not a feature store" in inspected.output


def test_verify_finds_bytes_changed_after_extraction_by_their_checksum(tmp_path):
    store = builtin_store(tmp_path, size=28, views="identity,hflip", items_per_shard=4)
    runner = CliRunner()
    verified = runner.invoke(cache, ["verify", str(store)])
    assert verified.exit_code == 0 and "each entry matching its checksum" in verified.output
    group = zarr.open(str(store), mode="r+")
    image = group["images"][7, 0]
    image[3, 4, 0] ^= 1  # one bit of one pixel: still a valid image, so only the checksum can tell
    group["images"][7, 0] = image
    features = group["features"][5, 1]
    features.view(np.uint16)[0, 1, 1] ^= 1  # the lowest bit of one feature: still finite, still a number
    group["features"][5, 1] = features
    verified = runner.invoke(cache, ["verify", str(store)])
    assert verified.exit_code == 1
    assert "item 5 (test_005): view(s) hflip no longer match their checksum" in verified.output
    assert "item 7 (test_007): view(s) identity, hflip no longer match" in verified.output, "hflip reads those pixels"
    assert "--repair" in verified.output


def test_repair_extracts_the_broken_items_again_and_only_their_shard(tmp_path):
    store = builtin_store(tmp_path, size=28, views="identity,hflip", items_per_shard=4)
    pristine = {name: np.asarray(zarr.open(str(store))[name][:]) for name in ("features", "images", "checksum")}
    group = zarr.open(str(store), mode="r+")
    image = group["images"][7, 0]
    image[3, 4, 0] ^= 1
    group["images"][7, 0] = image
    features = group["features"][2, 0]
    features[0, 0, 0] = np.inf
    group["features"][2, 0] = features

    result = extract(
        ExtractionRequest(
            featurizer="vit_small_patch14_dinov2", weights="random", dataset="builtin", root=None, split="test",
            size=28, views="identity,hflip", out=str(tmp_path), workers=0, items_per_shard=4, repair=True,
        )
    )  # fmt: skip
    changed = "no longer match their checksum (the stored bytes changed after extraction)"
    assert result.repaired == [
        f"test_002: view(s) identity {changed}",
        "test_002: features are not finite",
        f"test_007: view(s) identity, hflip {changed}",
    ]
    assert result.items_extracted == 8, "the two shards holding broken items, and nothing else"
    assert CliRunner().invoke(cache, ["verify", str(store)]).exit_code == 0
    for name, values in pristine.items():
        np.testing.assert_array_equal(np.asarray(zarr.open(str(store))[name][:]), values)


def test_a_schema1_store_without_checksums_verifies_and_says_its_bytes_were_not_checked(tmp_path):
    """Stores of schema 1 made before checksums existed (the fixture, less its checksums)."""
    store = copied(SCHEMA1_STORE, tmp_path)
    del zarr.open_group(str(store), mode="r+")["checksum"]
    verified = CliRunner().invoke(cache, ["verify", str(store)])
    assert verified.exit_code == 0 and "its bytes were not checked" in verified.output


def test_stats_refuse_features_that_are_not_finite_and_write_nothing(pristine, tmp_path):
    """A NaN would make every statistic of its channel NaN (and JSON without a standard reading), an Inf the norms."""
    store = copied(pristine, tmp_path)
    features = zarr.open(str(store), mode="r+")["features"]
    for item, value in ((9, np.inf), (3, np.nan)):
        damaged = features[item, 0]
        damaged[0, 0, 0] = value
        features[item, 0] = damaged
    out = tmp_path / "stats.json"
    refused = CliRunner().invoke(cache, ["stats", str(store), "--out", str(out)])
    assert refused.exit_code == 1
    assert "item 3 (test_003): features are not finite" in refused.output, "the first such item"
    assert "`isegprobe cache verify`" in refused.output and "Traceback" not in refused.output
    assert not out.exists()


def test_ls_follows_linked_stores_and_not_a_link_round_in_a_circle(pristine, tmp_path):
    root = tmp_path / "cache"
    (root / "elsewhere").mkdir(parents=True)
    (root / "elsewhere" / pristine.name).symlink_to(pristine, target_is_directory=True)
    (root / "elsewhere" / "up").symlink_to(root, target_is_directory=True)
    listed = CliRunner().invoke(cache, ["ls", str(root)])
    assert listed.exit_code == 0, listed.output
    rows = listed_rows(listed.output)
    assert [row[:3] for row in rows] == [
        [f"elsewhere/{pristine.name}", "vit_small_patch14_dinov2", "random"],
    ]


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ("featurizer", "name"),
        ("featurizer", "weights"),
        ("dataset", "name"),
        ("dataset", "split"),
        ("dataset", "root"),
        ("layout", "compressor"),
    ],
)
def test_a_store_without_a_key_its_readers_use_is_refused_by_name_and_listed_as_such(pristine, tmp_path, section, key):
    intact = copied(pristine, tmp_path)
    damaged = copied(pristine, tmp_path / "damaged")
    edit_attrs(damaged, lambda attrs: attrs[section].pop(key))
    inspected = CliRunner().invoke(cache, ["inspect", str(damaged)])
    assert inspected.exit_code == 1
    assert f"attrs {section}.{key}: expected" in inspected.output and "no such key" in inspected.output
    listed = CliRunner().invoke(cache, ["ls", str(tmp_path)])
    assert listed.exit_code == 0, listed.output
    rows = listed_rows(listed.output)
    assert [row[0] for row in rows] == [f"damaged/{damaged.name}", intact.name]
    assert rows[0][1].startswith(f"unreadable: attrs {section}.{key}: expected")
    assert rows[1][1] == "vit_small_patch14_dinov2"


def test_a_store_of_schema_2_without_its_checksums_is_refused_not_called_consistent(pristine, tmp_path):
    """Every store of schema 2 has them; a copy that lost the folder verified as "consistent, made before checksums"
    and skipped its pixels, so an undecodable image shard went unseen until evaluation."""
    store = copied(pristine, tmp_path)
    shutil.rmtree(store / "checksum")
    verified = CliRunner().invoke(cache, ["verify", str(store)])
    assert verified.exit_code == 1
    assert "array checksum is missing" in verified.output and "consistent" not in verified.output


def repeat_first_id(attrs: dict) -> None:
    attrs["item_ids"][1] = attrs["item_ids"][0]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda attrs: attrs.update(schema_version=1), "layout.pixel_views: expected a list in a store of schema 2"),
        (lambda attrs: attrs["layout"].pop("pixel_views"), "layout.pixel_views: expected a list in a store of schema"),
        (repeat_first_id, "item_ids: expected distinct names, as a dataset's ids are, got \"'test_000' more than once"),
    ],
)
def test_attrs_that_contradict_the_stores_layout_are_refused_by_name(pristine, tmp_path, change, message):
    """A schema edited to 1 (whose checksums cover other bytes) made `cache verify` an IndexError; a repeated id read
    another item's entry, and evaluation then blamed --root."""
    store = copied(pristine, tmp_path)
    edit_attrs(store, change)
    verified = CliRunner().invoke(cache, ["verify", str(store)])
    assert verified.exit_code == 1
    assert message in verified.output and "Traceback" not in verified.output


def test_a_store_that_does_not_say_how_it_resized_reads_as_stretched(pristine, tmp_path):
    """What every reader takes its absence for."""
    store = copied(pristine, tmp_path)
    edit_attrs(store, lambda attrs: attrs["preprocessing"].pop("resize"))
    inspected = CliRunner().invoke(cache, ["inspect", str(store)])
    assert inspected.exit_code == 0, inspected.output
    assert "preprocess size 28  resize stretch  views identity\n" in inspected.output


def test_metadata_that_is_not_text_is_reported_as_unreadable(pristine, tmp_path):
    store = copied(pristine, tmp_path)
    (store / "zarr.json").write_bytes(b"\xff\xfe\x00garbage")
    runner = CliRunner()
    for command in ("inspect", "verify", "stats"):
        refused = runner.invoke(cache, [command, str(store)])
        assert refused.exit_code == 1
        assert f"{store / 'zarr.json'}: unreadable Zarr metadata" in refused.output, command
    listed = runner.invoke(cache, ["ls", str(tmp_path)])
    assert listed.exit_code == 0, listed.output
    assert listed_rows(listed.output)[0][1].startswith("unreadable: zarr.json: unreadable Zarr metadata")


@pytest.mark.parametrize("array", ["features", "done"])
def test_an_arrays_metadata_that_is_not_json_is_named(pristine, tmp_path, array):
    store = copied(pristine, tmp_path)
    (store / array / "zarr.json").write_bytes(b"")
    for command in ("inspect", "verify", "stats"):
        refused = CliRunner().invoke(cache, [command, str(store)])
        assert refused.exit_code == 1
        assert f"{store / array / 'zarr.json'}: unreadable Zarr metadata (JSONDecodeError" in refused.output, command


@pytest.mark.parametrize("array", ["features", "valid_box"])
def test_an_arrays_metadata_that_is_json_but_no_zarr_array_is_named(pristine, tmp_path, array):
    """The arrays' metadata is read one array at a time: read all at once, one unreadable file left the others'
    reads pending in Zarr's event loop (a "Task was destroyed" line each at exit) and the error named no file."""
    store = copied(pristine, tmp_path)
    metadata = json.loads((store / array / "zarr.json").read_text())
    del metadata["node_type"]
    (store / array / "zarr.json").write_text(json.dumps(metadata))
    for command in ("inspect", "verify", "stats"):
        refused = CliRunner().invoke(cache, [command, str(store)])
        assert refused.exit_code == 1
        assert f"{store / array / 'zarr.json'}: unreadable Zarr metadata (MetadataValidationError" in refused.output


def test_verify_reports_a_count_of_finished_items_that_is_not_a_number(pristine, tmp_path):
    store = copied(pristine, tmp_path)
    edit_attrs(store, lambda attrs: attrs["completion"].update(items_done="x"))
    verified = CliRunner().invoke(cache, ["verify", str(store)])
    assert verified.exit_code == 1
    assert "attrs completion.items_done: expected the number of finished items, got 'x'" in verified.output


def test_verify_recompute_tells_features_that_other_code_computed_though_their_checksums_hold(
    pristine, tmp_path, monkeypatch
):
    """A store whose extraction normalized the colour channels in the wrong order matches its own checksums; only
    featurizing its pixels again shows that its features are not the featurizer's."""
    from isegprobe.cache import extract_loop as extraction

    runner = CliRunner()
    agreed = runner.invoke(cache, ["verify", str(pristine), "--recompute", "3", "--device", "cpu"])
    assert agreed.exit_code == 0, agreed.output
    assert "features of 3 stored images (3 items) computed again on cpu: the same values as stored, every one " in (
        agreed.output
    ), "the same code on the same machine gives the same bits (and a cosine that read 0.999999 is not shown)"

    original = extraction.normalize_images

    def channels_reversed(images, mean, std, out=None):
        return original(images, tuple(reversed(mean)), tuple(reversed(std)), out)

    monkeypatch.setattr(extraction, "normalize_images", channels_reversed)
    wrong = builtin_store(tmp_path, size=28, views="identity,hflip", items_per_shard=4, shared=False)
    monkeypatch.undo()
    assert runner.invoke(cache, ["verify", str(wrong)]).exit_code == 0, "its checksums hold"
    refused = runner.invoke(cache, ["verify", str(wrong), "--recompute", "2", "--device", "cpu"])
    assert refused.exit_code == 1
    assert "features of 4 stored images (2 items) computed again on cpu" in refused.output
    assert "below 0.999, so the stored features are not what the recorded featurizer computes" in refused.output


def test_verify_images_finds_items_whose_chunks_were_swapped_which_checksums_pass(pristine, tmp_path):
    """Chunk files carry their checksums with them: swapped between two shards, every entry still matches its
    checksum. Compared with the dataset's images, the items are not theirs."""
    store = copied(pristine, tmp_path)
    for array in store.iterdir():
        chunks = array / "c"
        if (chunks / "0").exists() and (chunks / "1").exists():
            (chunks / "0").rename(chunks / "swapped")
            (chunks / "1").rename(chunks / "0")
            (chunks / "swapped").rename(chunks / "1")
    runner = CliRunner()
    assert runner.invoke(cache, ["verify", str(store)]).exit_code == 0, "the checksums cannot tell"
    verified = runner.invoke(cache, ["verify", "--images", str(store)])
    assert verified.exit_code == 1
    assert "item 0 (test_000): not its image under builtin (its working-size pixels differ" in verified.output
    assert "8 item(s) hold pixels of other images" in verified.output
    whole = runner.invoke(cache, ["verify", "--images", str(pristine)])
    assert whole.exit_code == 0 and "every finished item's pixels are its image under builtin" in whole.output

"""Inputs that used to give a wrong result with exit code 0: files paired by pattern or by chance, photos turned by
their EXIF tag away from their masks, lossy masks read by a rule that loses their object, numbers outside their
range, stores whose chunks are missing or damaged (read as zeros), and store paths above the working folder."""

from __future__ import annotations

import dataclasses
import re
import shutil
import typing

import click
import cv2
import numpy as np
import pytest
from bad_input_world import SIZE, World, invoke, png_declaring, remove_chunk_file, scramble_chunk_file
from dataset_trees import box, write_image, write_mask
from PIL import Image

from isegprobe.cli import COMMANDS, main
from isegprobe.commands.limits import FiniteFloatRange
from isegprobe.config import TrainConfig
from isegprobe.config_loading import load_train_config
from isegprobe.data import create_dataset
from isegprobe.data.image_io import MAX_PIXELS_ENV
from isegprobe.errors import UserError
from isegprobe.training.store_checks import check_store_fits


def test_files_are_paired_by_exact_name_never_by_a_pattern(tmp_path):
    """`a[1]` read as a glob pattern matches `a1.bmp`: GrabCut's item a[1] stored the picture of a1."""
    grabcut, custom = tmp_path / "GrabCut", tmp_path / "custom"
    pictures = {}
    for seed, stem in enumerate(("a[1]", "a1")):
        pictures[stem] = write_image(grabcut / "data_GT" / f"{stem}.bmp", 16, 16, seed=seed)
        write_mask(grabcut / "boundary_GT" / f"{stem}.bmp", box(16, 16, 2, 2, 9, 9))
        write_image(custom / "images" / f"{stem}.png", 16, 16, seed=seed)
        write_mask(custom / "masks" / f"{stem}.png", box(16, 16, 2, 2, 9, 9))
    for name, root in (("grabcut", grabcut), ("custom", custom)):
        dataset = create_dataset(name, root)
        for stem, picture in pictures.items():
            assert np.array_equal(dataset[dataset.ids().index(stem)].image, picture), f"{name}: {stem}"


def test_two_masks_with_one_name_are_refused_naming_both(tmp_path):
    root = tmp_path / "GrabCut"
    write_image(root / "data_GT" / "cat.jpg", 16, 16)
    write_mask(root / "boundary_GT" / "cat.bmp", box(16, 16, 2, 2, 9, 9))
    write_mask(root / "boundary_GT" / "cat.png", box(16, 16, 5, 5, 12, 12))
    with pytest.raises(UserError, match=r"cat\.bmp and cat\.png: 2 mask files named cat; which one belongs"):
        create_dataset("grabcut", root)[0]


def test_exif_orientation_is_ignored_for_images_and_masks_alike(tmp_path):
    """A square photo whose EXIF tag says "turn 90 degrees": its mask was drawn on the stored pixels, so both are
    read as stored (OpenCV alone turned the photo and not the mask)."""
    root = tmp_path / "custom"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    pixels = np.zeros((32, 32, 3), np.uint8)
    pixels[:, :12] = 255  # the object: the left part of the stored picture
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(pixels).save(root / "images" / "phone.jpg", exif=exif.tobytes(), quality=95)
    Image.fromarray(box(32, 32, 0, 0, 32, 12)).save(root / "masks" / "phone.png", exif=exif.tobytes())
    sample = create_dataset("custom", root)[0]
    inside, outside = sample.image[sample.labels == 1], sample.image[sample.labels == 0]
    assert (sample.labels == 1).sum() == 32 * 12
    assert inside.mean() > 200 and outside.mean() < 50, "the object's pixels lie under its mask"


@pytest.mark.parametrize(
    ("family", "images", "masks"),
    [("grabcut", "data_GT", "boundary_GT"), ("davis", "img", "gt"), ("custom", "images", "masks")],
)
def test_a_mask_saved_as_jpeg_keeps_its_object_in_every_binary_mask_family(tmp_path, family, images, masks):
    """One rule for every family (RITM's: above 128 is object): JPEG turns a 0/255 mask into values around both,
    which "exactly 255" (GrabCut's reader) read as background and "not 0" (DAVIS's) as object."""
    root = tmp_path / family
    write_image(root / images / "im.png", 40, 40)
    (root / masks).mkdir(parents=True)
    drawn = box(40, 40, 5, 7, 27, 30)
    assert cv2.imwrite(str(root / masks / "im.jpg"), drawn, [cv2.IMWRITE_JPEG_QUALITY, 60])
    stored = cv2.imread(str(root / masks / "im.jpg"), cv2.IMREAD_UNCHANGED)
    assert ((stored > 128) & (stored < 255)).any() and ((stored > 0) & (stored <= 128)).any(), "lossy, both ways"
    labels = create_dataset(family, root)[0].labels
    assert np.array_equal(labels > 0, stored > 128)


def test_every_numeric_option_has_a_range_that_refuses_nan():
    """So that no numeric option of any command takes a value it cannot use (`--workers -1`, `--threshold nan`)."""
    unbounded = []
    context = click.Context(main)
    for name in COMMANDS:
        command = main.get_command(context, name)
        leaves = command.commands.values() if isinstance(command, click.Group) else [command]
        for leaf in leaves:
            for param in leaf.params:
                kind = param.type
                if kind in (click.INT, click.FLOAT) or (
                    isinstance(kind, click.FloatRange) and not isinstance(kind, FiniteFloatRange)
                ):
                    unbounded.append(f"{name} {leaf.name} {param.name}")
    assert not unbounded


@pytest.mark.parametrize(
    "arguments",
    [
        ["evaluate", "--checkpoint", ".", "--out", "x", "--threshold", "2"],
        ["evaluate", "--checkpoint", ".", "--out", "x", "--batch-size", "0"],
        ["extract-features", "--featurizer", "f", "--dataset", "builtin", "--out", "x", "--size", "-5"],
        ["extract-features", "--featurizer", "f", "--dataset", "builtin", "--out", "x", "--items-per-shard", "0"],
        ["extract-features", "--featurizer", "f", "--dataset", "builtin", "--out", "x", "--workers", "-1"],
        ["extract-features", "--featurizer", "f", "--dataset", "builtin", "--out", "x", "--max-pixels", "0"],
        ["demo", "--checkpoint", ".", "--threshold", "nan"],
        ["plot", "features", "--store", ".", "--item", "-1"],
    ],
)
def test_an_option_outside_its_range_is_refused_naming_it_and_the_range(arguments):
    result = invoke(*arguments)
    option = next(argument for argument in reversed(arguments) if argument.startswith("--"))
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}'" in result.output and "range" in result.output


def holds_numbers(hint: object) -> bool:
    """Whether a type hint is a number, an optional one or a list of them."""
    return hint in (int, float) or any(holds_numbers(argument) for argument in typing.get_args(hint))


def test_every_numeric_config_key_has_a_range():
    def unbounded(cls: type, prefix: str) -> list[str]:
        keys, hints = [], typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[field.name]):
                keys += unbounded(hints[field.name], f"{prefix}{field.name}.")
            elif holds_numbers(hints[field.name]) and "range" not in field.metadata:
                keys.append(f"{prefix}{field.name}")
        return keys

    assert unbounded(TrainConfig, "") == []


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lr=inf", "'optim.lr' must be a finite number > 0, got inf"),
        ("optim.lr=nan", "'optim.lr' must be a finite number > 0, got nan"),
        ("schedule.epochs=0", "'schedule.epochs' must be a finite number >= 1, got 0"),
        ("data.batch_size=-2", "'data.batch_size' must be a finite number >= 1, got -2"),
        ("optim.betas=[0.9, 1.0]", "'optim.betas' must hold finite numbers >= 0 and < 1"),
        ("loss.alpha=1.5", "'loss.alpha' must be a finite number >= 0 and <= 1, got 1.5"),
        ("data.keep_background_prob=2", "'data.keep_background_prob' must be a finite number >= 0 and <= 1, got 2"),
        ("clicks.pred_threshold=1", "'clicks.pred_threshold' must be a finite number > 0 and < 1"),
        ("sampler.negative_bg_prob=0.9", "must add up to 1, got 0.9 + 0.4 + 0.5 = 1.8"),
        ("seed=99999999999999999999999", "'seed' must be a finite number >= 0 and <= 9223372036854775807"),
        ("clicks.max_num_next_clicks=1000000", "'clicks.max_num_next_clicks' must be a finite number >= 0 and <= 100"),
        ("model.click_radius=100000", "'model.click_radius' must be a finite number >= 1 and <= 100, got 100000"),
        ("sampler.max_points=1000000000", "'sampler.max_points' must be a finite number >= 1 and <= 100"),
        ("sampler.prob_gamma=1e300", "'sampler.prob_gamma' must be a finite number >= 0 and <= 10"),
        ("sampler.expand_ratio=1e300", "'sampler.expand_ratio' must be a finite number >= 0 and <= 10"),
        ("sampler.positive_erode_iters=1000000000", "'sampler.positive_erode_iters' must be a finite number >= 0 and"),
        ("optim.eps=0", "'optim.eps' must be a finite number > 0, got 0"),
        ("data.size=100000", "'data.size' must be a finite number >= 1 and <= 4096, got 100000"),
        (
            "model.click_encoder.mlp_dim=1000000000000",
            "'model.click_encoder.mlp_dim' must be a finite number >= 1 and <= 16384",
        ),
        ("data.views=[]", "'data.views' must name at least one of the store's views (null: all of them)"),
        ("data.views=[identity, identity]", "'data.views' names a view twice: 'identity'"),
    ],
)
def test_a_config_value_outside_its_range_is_refused_naming_the_key_and_the_range(override, message):
    with pytest.raises(UserError, match=re.escape(message)):
        load_train_config("quickstart", [override])


def test_the_pixel_limit_is_read_from_the_header_and_can_be_moved(tmp_path, monkeypatch):
    monkeypatch.delenv(MAX_PIXELS_ENV, raising=False)  # --max-pixels sets it for the process: undone afterwards
    root = tmp_path / "custom"
    write_image(root / "images" / "small.png", 28, 28)
    write_mask(root / "masks" / "small.png", box(28, 28, 2, 2, 9, 9))
    checked = invoke("datasets", "check", "custom", "--root", root, "--max-pixels", "500")
    assert checked.exit_code == 1
    assert "small.png: 28 x 28 pixels (0.0 MP) is above the limit of 500 pixels" in checked.output
    assert invoke("datasets", "check", "custom", "--root", root, "--max-pixels", "784").exit_code == 0
    png_declaring(root / "images" / "bomb.png", 40000, 40000)  # 4.6 kB that would decode to 4.8 GB
    write_mask(root / "masks" / "bomb.png", box(28, 28, 2, 2, 9, 9))
    checked = invoke("datasets", "check", "custom", "--root", root, "--max-pixels", "100000000")
    assert checked.exit_code == 1 and "Traceback" not in checked.output
    assert "bomb.png: a size of more than 178956970 pixels is above the limit of 100000000 pixels" in checked.output


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (
            lambda w, store: ["train", "--config", "quickstart", "--store", store, "--out", w.root / "t_missing"],
            "16 finished items have chunk files missing (an interrupted copy?): item 0 (train_000): images",
        ),
        (
            lambda w, store: ["plot", "features", "--store", store, "--item", "3", "--out", w.root / "missing.png"],
            "1 finished item has chunk files missing (an interrupted copy?): item 3 (train_003): images",
        ),
        (
            lambda w, store: ["cache", "stats", store],
            "16 finished items have chunk files missing (an interrupted copy?): item 0 (train_000): images",
        ),
    ],
    ids=["train", "plot features", "cache stats"],
)
def test_every_reader_refuses_a_store_with_missing_chunk_files(world: World, command, expected):
    """`evaluate` is in test_bad_inputs; the cheap check (one stat per shard) runs wherever a store is opened, for
    the items the command reads."""
    name = f"missing_{len(list(world.root.glob('missing_*')))}"
    store = world.damaged_store(name, remove_chunk_file("images", 0), world.train_store)
    result = invoke(*command(world, store))
    assert result.exit_code == 1, result.output
    assert expected in result.output


def test_a_chunk_that_does_not_decode_stops_training_naming_the_item_even_in_a_loader_worker(world: World):
    """Its file is there, so the check at open passes; the read fails, in a spawned DataLoader worker here (the
    first item, which the main process reads for the probe's dims, is whole), and the message reaches the user
    without the worker's traceback."""
    damage = scramble_chunk_file("features", 1, end=-600)  # items 16-23, every view
    store = world.damaged_store("scrambled_train", damage, world.train_store)
    trained = invoke("train", "--config", "quickstart", "--store", store, "--out", world.root / "t_scrambled",
                     "--set", "data.num_workers=1", "--max-iters", "6")  # fmt: skip
    assert trained.exit_code == 1, trained.output
    assert re.search(r"item (1[6-9]|2[0-3]) \(train_0\d\d\): the features chunk cannot be decoded", trained.output)
    assert "Traceback" not in trained.output and "DataLoader worker" not in trained.output


def test_verify_reports_every_broken_item_and_the_same_extraction_repairs_them(world: World, tmp_path):
    out = tmp_path / "cache"
    store = out / world.store.name
    shutil.copytree(world.store, store)
    scramble_chunk_file("features", 1)(store)
    remove_chunk_file("images", 2)(store)
    verified = invoke("cache", "verify", store)
    assert verified.exit_code == 1
    assert "item 4 (test_004): the features chunk cannot be decoded" in verified.output
    for item in range(8, 12):
        assert f"item {item} (test_{item:03d}): the images chunk is missing" in verified.output
    options = ("--dataset", "builtin", "--size", "56", "--items-per-shard", "4", "--workers", "0", "--out", out)
    repaired = invoke("extract-features", "--featurizer", "vit_small_patch14_dinov2", "--weights", "random", *options,
                      "--repair")  # fmt: skip
    assert repaired.exit_code == 0, repaired.output
    assert "repairing test_008: chunk files missing (images)" in repaired.output
    assert invoke("cache", "verify", store).exit_code == 0


def test_store_and_run_paths_above_the_working_folder_work(world: World, monkeypatch):
    """tensorstore calls `../cache/S.zarr` an invalid file path; paths are resolved before it sees them."""
    (world.root / "here").mkdir(exist_ok=True)
    monkeypatch.chdir(world.root / "here")
    store = f"../{world.store.relative_to(world.root)}"
    evaluated = invoke("evaluate", "--checkpoint", "../run", "--store", store, "--max-clicks", "1", "--out", "res")
    assert evaluated.exit_code == 0, evaluated.output
    assert invoke("cache", "verify", store).exit_code == 0


def test_a_store_that_does_not_fit_the_config_is_refused_saying_how_to_go_on():
    data = load_train_config("quickstart", ["data.size=224"]).data
    preprocessing, provenance = {"size": 56}, {"name": "vit_small_patch14_dinov2", "normalization": "model"}
    with pytest.raises(UserError, match=r"extract the dataset with --size 224 .* or train at the store's size with "
                       r"--set data\.size=56"):  # fmt: skip
        check_store_fits(data, preprocessing, provenance)
    data = load_train_config("quickstart", ["data.size=56", "data.normalization=bogus"]).data
    with pytest.raises(
        UserError, match=r"data\.normalization must be null \(any\) or one of model, imagenet, got 'bogus'"
    ):
        check_store_fits(data, preprocessing, provenance)


def test_every_way_a_store_does_not_fit_a_research_preset_is_said_at_once(world: World):
    """A plain store given to a research preset was refused for its views alone; extracted again with them, for its
    size; then for its featurizer and for its input statistics: an extraction for each, where one command fits all."""
    refused = invoke(
        "train", "--config", "sbd_dinov2_simple-vit_noup", "--store", world.train_store, "--out", world.root / "t_fit"
    )
    assert refused.exit_code == 1
    assert " ".join(refused.output.split()).endswith(
        "data.featurizer is 'dinov2_vits14' but the store was extracted with 'vit_small_patch14_dinov2'; "
        "data.normalization is 'imagenet' but the store was extracted with 'model'; "
        f"data.size is 224 but the store was extracted at {SIZE} px; "
        "data.views asks for rcrop1, rcrop2, rcrop3, rcrop4, rcrop5, rcrop6, rcrop7, rcrop8, which the store lacks (it "
        "has identity, hflip): extract the dataset with --featurizer dinov2_vits14 --normalization imagenet --size 224 "
        "--views identity,rcrop1,rcrop2,rcrop3,rcrop4,rcrop5,rcrop6,rcrop7,rcrop8 for this config, or choose another "
        "preset"
    )
    assert not (world.root / "t_fit").exists()
    views_alone = invoke(
        "train", "--config", "quickstart", "--set", "data.views=[hflip,crop1]", "--store", world.train_store,
        "--out", world.root / "t_fit",
    )  # fmt: skip
    assert views_alone.exit_code == 1
    assert (
        "data.views asks for crop1, which the store lacks (it has identity, hflip): extract the dataset with "
        "--views identity,hflip,crop1 for this config, or train on views it has"
    ) in " ".join(views_alone.output.split())

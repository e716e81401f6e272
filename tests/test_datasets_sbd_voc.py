"""SBD (.mat instance maps, train/val lists, RITM's training filters) and PASCAL VOC (palette PNGs, 255 ignored)."""

import re

import numpy as np
import pytest
from dataset_trees import sbd_tree, use_dataset_config, write_image
from PIL import Image
from scipy.io import savemat

from isegprobe.data import create_dataset
from isegprobe.errors import UserError

H, W = 48, 64


@pytest.fixture()
def sbd_root(tmp_path):
    return sbd_tree(tmp_path / "SBD")


def test_sbd_val_per_image_and_per_instance(sbd_root):
    per_image = create_dataset("sbd", sbd_root, "val")
    assert per_image.ids() == ["2008_000001", "2008_000002"]
    first = per_image[0]
    assert first.num_instances == 2 and first.labels[3, 3] == 1 and first.labels[15, 10] == 2
    assert per_image[1].num_instances == 3, "evaluation keeps every instance"
    per_instance = create_dataset("sbd", sbd_root, "val-instances")
    assert per_instance.ids() == ["2008_000001_1", "2008_000001_2", "2008_000002_1", "2008_000002_2", "2008_000002_3"]
    assert per_instance[1].labels.sum() == 6 * 16
    assert create_dataset("sbd", sbd_root, "test").split == "val", "test means SBD's evaluation split"


def test_sbd_train_filter_comes_from_the_config(sbd_root, tmp_path, monkeypatch):
    """The thin diagonal (90 pixels filling 4 % of its box) goes; the 1-pixel object stays labelled, as in RITM,
    whose 80-pixel minimum acts on each training crop (the sampler's), where a smaller object is no target but its
    pixels are still an "other" object's, not background."""
    use_dataset_config(monkeypatch, tmp_path, options={"sbd": {"train": {"buggy_mask_threshold": 0.08}}})
    sample = create_dataset("sbd", sbd_root, "train")[0]
    assert sample.num_instances == 2 and sample.labels[40, 56] == 0
    assert sample.labels[47, 0] != 0 and np.count_nonzero(sample.labels == sample.labels[47, 0]) == 1
    assert create_dataset("sbd", sbd_root, "val")[1].num_instances == 3, "options are per split"


def test_sbd_unknown_option_and_split_are_refused(sbd_root, tmp_path, monkeypatch):
    config = use_dataset_config(monkeypatch, tmp_path, options={"sbd": {"val": {"min_area": 5}}})
    with pytest.raises(UserError, match=rf"{config}: options\.sbd\.val: unknown keys \['min_area'\]"):
        create_dataset("sbd", sbd_root, "val")
    with pytest.raises(UserError, match="sbd has splits train, val"):
        create_dataset("sbd", sbd_root, "trainval")


@pytest.mark.parametrize(
    ("dataset", "key", "value"),
    [
        ("sbd", "buggy_mask_threshold", "0.08"),
        ("sbd", "buggy_mask_threshold", True),
        ("sbd", "buggy_mask_threshold", float("nan")),
        ("sbd", "buggy_mask_threshold", -1),
        ("sbd", "buggy_mask_threshold", 8),
        ("sbd", "buggy_mask_threshold", None),
        ("lvis", "max_overlap_ratio", 50),
    ],
)
def test_an_option_value_that_is_no_fraction_is_refused_naming_the_file_and_key(
    sbd_root, tmp_path, monkeypatch, dataset, key, value
):
    """Only the keys were checked: a quoted number failed on the first item as a TypeError, `true` read as 1 and
    dropped every object but rectangles, NaN or -1 turned RITM's filter off, and 8 (for 8 %) dropped every object."""
    config = use_dataset_config(monkeypatch, tmp_path, options={dataset: {"train": {key: value}}})
    with pytest.raises(UserError) as error:
        create_dataset(dataset, sbd_root, "train")
    nullable = " or null" if dataset == "lvis" else ""
    assert str(error.value) == (
        f"{config}: options.{dataset}.train.{key} must be a fraction from 0 to 1{nullable}, got {value!r}"
    )


def test_an_image_listed_twice_is_refused_naming_its_lines(tmp_path):
    root = sbd_tree(tmp_path / "SBD")
    (root / "val.txt").write_text("2008_000001\n2008_000002\n2008_000001\n")
    with pytest.raises(UserError, match=r"val\.txt, lines 1 and 3: '2008_000001' is listed twice; list each image"):
        create_dataset("sbd", root, "val")


@pytest.mark.parametrize(("listed", "message"), [(b"\n \n\n", "lists no image"), (b"\xff\xfe\x00", "not a text file")])
def test_a_split_list_without_image_names_is_refused(tmp_path, listed, message):
    root = sbd_tree(tmp_path / "SBD")
    (root / "val.txt").write_bytes(listed)
    with pytest.raises(UserError, match=rf"val\.txt: {message}"):
        create_dataset("sbd", root, "val")


@pytest.mark.parametrize("name", ["sub/../../../../escaped", "..", "a\\b", "/etc/x"])
def test_a_listed_name_that_is_a_path_is_refused_by_its_line(tmp_path, name):
    """Read from outside the root, its evaluation overlays (named after the item) went outside --out."""
    root = sbd_tree(tmp_path / "SBD")
    (root / "val.txt").write_text(f"2008_000001\n{name}\n")
    with pytest.raises(UserError, match=rf"val\.txt, line 2: {re.escape(repr(name))} is a path, not an image name"):
        create_dataset("sbd", root, "val")


def test_a_byte_order_mark_before_the_first_name_is_no_part_of_it(tmp_path):
    root = sbd_tree(tmp_path / "SBD")
    (root / "val.txt").write_text("\ufeff2008_000001\n2008_000002\n", encoding="utf-8")
    assert create_dataset("sbd", root, "val")[0].num_instances == 2


def test_sbd_damaged_mat_names_the_file(sbd_root):
    (sbd_root / "inst" / "2008_000002.mat").write_bytes(b"garbage")
    per_instance = create_dataset("sbd", sbd_root, "val-instances")
    assert len(per_instance) == 3, "an unreadable file stays one item, so reading it reports the file"
    with pytest.raises(UserError, match=r"2008_000002\.mat"):
        per_instance[2]


@pytest.mark.parametrize(
    ("segmentation", "shown"),
    [
        (np.full((H, W), -1, np.int16), "values -1 to -1"),
        (np.full((H, W), 3e9, np.uint32), "values 3000000000 to 3000000000"),
        (np.full((H, W), 1.5), "float64 (48, 64)"),
        ("hello", "<U5 ()"),
    ],
)
def test_sbd_instance_maps_that_are_no_instance_numbers_name_the_file(sbd_root, segmentation, shown):
    savemat(str(sbd_root / "inst" / "2008_000002.mat"), {"GTinst": {"Segmentation": segmentation}})
    with pytest.raises(UserError, match=r"2008_000002\.mat: GTinst\.Segmentation must be a 2-D map of instance") as no:
        create_dataset("sbd", sbd_root, "val")[1]
    assert f"numbers from 0, got {shown}" in str(no.value)


def _write_palette_png(path, indices):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(indices.astype(np.uint8), mode="P")
    image.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [224, 224, 192] * 253)
    image.save(path)


def test_pascalvoc_reads_palette_indices_and_ignores_255(tmp_path):
    root = tmp_path / "VOC2012"
    objects = np.zeros((H, W), np.uint8)
    objects[2:8, 2:8] = 1
    objects[10:16, 10:18] = 2
    objects[1, 1:9] = 255
    objects[9, 9:19] = 255
    background_only = np.zeros((H, W), np.uint8)
    background_only[0, :] = 255
    for name, indices in (("2007_000032", objects), ("2007_000033", background_only)):
        write_image(root / "JPEGImages" / f"{name}.jpg", H, W)
        _write_palette_png(root / "SegmentationObject" / f"{name}.png", indices)
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000032\n2007_000033\n")
    dataset = create_dataset("pascalvoc", root)
    assert dataset.split == "val"
    sample = dataset[0]
    assert sample.num_instances == 2 and (sample.labels == 2).sum() == 48
    assert sample.ignore.sum() == 18 and not (sample.ignore & (sample.labels > 0)).any()
    assert dataset[1].num_instances == 0 and dataset[1].ignore[0].all()
    per_instance = create_dataset("pascalvoc", root, "val-instances")
    assert per_instance.ids() == ["2007_000032_1", "2007_000032_2"]
    assert per_instance[0].ignore.sum() == 18, "the border stays ignored for every object"

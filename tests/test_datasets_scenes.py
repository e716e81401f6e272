"""ADE20K (full release and scene-parsing layouts) and Open Images (segmentation CSV + mask PNGs)."""

import numpy as np
import pytest
from dataset_trees import box, write_image, write_mask

from isegprobe.data import create_dataset
from isegprobe.errors import UserError

H, W = 16, 20


def test_ade20k_full_release_reads_instances_from_the_blue_channel(tmp_path):
    root = tmp_path / "ADE20K"
    scene = root / "images" / "validation" / "a" / "abbey"
    write_image(scene / "ADE_val_00000001.jpg", H, W)
    seg = np.zeros((H, W, 3), np.uint8)  # RGB: R and G encode the class, B the instance
    seg[2:6, 2:6] = (10, 5, 7)
    seg[8:12, 8:14] = (20, 3, 9)
    seg[13:, :] = (30, 1, 0)  # labelled class but instance 0: not an object, as in RITM
    write_mask(scene / "ADE_val_00000001_seg.png", seg)
    write_image(scene / "ADE_val_00000002.jpg", H, W)
    write_mask(scene / "ADE_val_00000002_seg.png", np.zeros((H, W, 3), np.uint8))
    dataset = create_dataset("ade20k", root, "val")
    assert dataset.ids() == ["ADE_val_00000001", "ADE_val_00000002"]
    sample = dataset[0]
    assert sample.num_instances == 2 and sample.labels[3, 3] == 1 and sample.labels[9, 9] == 2
    assert dataset[1].num_instances == 0
    assert create_dataset("ade20k", root, "val-instances").ids() == ["ADE_val_00000001_1", "ADE_val_00000001_2"]


def test_ade20k_scene_parsing_layout_makes_each_class_an_object(tmp_path):
    root = tmp_path / "ADEChallengeData2016"
    write_image(root / "images" / "training" / "ADE_train_00000001.jpg", H, W)
    classes = np.zeros((H, W), np.uint8)
    classes[:8] = 3
    classes[8:, 10:] = 150
    write_mask(root / "annotations" / "training" / "ADE_train_00000001.png", classes)
    sample = create_dataset("ade20k", root, "train")[0]
    assert sample.num_instances == 2 and (sample.labels == 2).sum() == 80


def test_ade20k_scene_parsing_reads_images_of_an_upper_case_suffix(tmp_path):
    """An image saved as .JPG was left out with its annotation, without a word."""
    root = tmp_path / "ADEChallengeData2016"
    for name in ("ADE_val_00000001.jpg", "ADE_val_00000002.JPG"):
        write_image(root / "images" / "validation" / name, H, W)
        write_mask(root / "annotations" / "validation" / f"{name[:-4]}.png", box(H, W, 2, 2, 8, 8))
    assert create_dataset("ade20k", root, "val").ids() == ["ADE_val_00000001", "ADE_val_00000002"]


def test_openimages_groups_masks_by_image_and_resizes_them(tmp_path):
    root = tmp_path / "OpenImages"
    split = root / "validation"
    write_image(split / "images" / "0001eeaf4aed83f9.jpg", H, W)
    write_mask(split / "masks" / "0001eeaf4aed83f9_m0cmf2_a.png", box(H // 2, W // 2, 0, 0, 4, 5))  # half resolution
    write_mask(split / "masks" / "0001eeaf4aed83f9_m0k4j_b.png", box(H, W, 4, 4, 12, 12))
    write_image(split / "images" / "000a1249af2bc5f0.jpg", H, W)
    (split / "validation-annotations-object-segmentation.csv").write_text(
        "MaskPath,ImageID,LabelName,BoxID,BoxXMin,BoxXMax,BoxYMin,BoxYMax,PredictedIoU,Clicks\n"
        "0001eeaf4aed83f9_m0cmf2_a.png,0001eeaf4aed83f9,/m/0cmf2,a,0,0.5,0,0.5,0.9,\n"
        "0001eeaf4aed83f9_m0k4j_b.png,0001eeaf4aed83f9,/m/0k4j,b,0.2,0.6,0.25,0.75,0.8,\n"
        "000a1249af2bc5f0_m01g317_c.png,000a1249af2bc5f0,/m/01g317,c,0,1,0,1,0.7,\n"
    )
    dataset = create_dataset("openimages", root, "val")
    assert dataset.split == "validation"
    assert dataset.ids() == ["0001eeaf4aed83f9", "000a1249af2bc5f0"]
    sample = dataset[0]
    assert sample.num_instances == 2 and sample.labels[1, 1] == 1 and sample.labels[7, 9] == 2
    per_instance = create_dataset("openimages", root, "validation-instances")
    assert per_instance[0].labels.sum() == 80, "the half-size mask is scaled to the image"
    with pytest.raises(UserError, match=r"000a1249af2bc5f0_m01g317_c\.png: cannot read this mask"):
        dataset[1]


def test_openimages_reads_a_csv_saved_with_a_byte_order_mark(tmp_path):
    """A spreadsheet's "CSV UTF-8" begins with a byte-order mark, which made the first column '\\ufeffMaskPath' and
    the file refused for a missing MaskPath column."""
    split = tmp_path / "OpenImages" / "validation"
    write_image(split / "images" / "0001eeaf4aed83f9.jpg", H, W)
    write_mask(split / "masks" / "0001eeaf4aed83f9_m0k4j_b.png", box(H, W, 4, 4, 12, 12))
    (split / "validation-annotations-object-segmentation.csv").write_bytes(
        b"\xef\xbb\xbfMaskPath,ImageID,LabelName\n0001eeaf4aed83f9_m0k4j_b.png,0001eeaf4aed83f9,/m/0k4j\n"
    )
    assert create_dataset("openimages", tmp_path / "OpenImages", "val")[0].num_instances == 1


HEADER = "MaskPath,ImageID,LabelName\n"


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("", r"segmentation\.csv: lists no mask \(one row per mask, with its MaskPath and ImageID\)"),
        (
            "../../../elsewhere/a.png,0001eeaf4aed83f9,/m/0k4j\n",
            r"line 2: MaskPath '\.\./\.\./\.\./elsewhere/a\.png' is not",
        ),
        (
            "a.png,../../0001eeaf4aed83f9,/m/0k4j\n",
            r"segmentation\.csv, line 2: ImageID '\.\./\.\./0001eeaf4aed83f9' is not a",
        ),
        ("a.png\n", r"line 2: ImageID None is not a file name \(expected a name in images/, without / or \.\.\)"),
    ],
    ids=["no row", "a mask path", "an image path", "a short row"],
)
def test_an_openimages_csv_of_no_mask_or_of_paths_is_refused_by_line(tmp_path, rows, message):
    """A CSV of no row was a dataset of no item that `datasets check` passed; a path read a file from outside the
    dataset's root; a short row failed on None."""
    split = tmp_path / "OpenImages" / "validation"
    write_image(split / "images" / "0001eeaf4aed83f9.jpg", H, W)
    (split / "validation-annotations-object-segmentation.csv").write_text(HEADER + rows)
    with pytest.raises(UserError, match=message):
        create_dataset("openimages", tmp_path / "OpenImages", "val")

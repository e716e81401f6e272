"""Berkeley, DAVIS, COCO_MVal and custom folders: images and masks matched by stem."""

import cv2
import numpy as np
import pytest
from dataset_trees import box, use_dataset_config, write_image, write_mask

from isegprobe.data import create_dataset
from isegprobe.data.folder_pairs import UnreadSubfolderWarning
from isegprobe.errors import UserError

H, W = 12, 16


@pytest.fixture()
def berkeley_root(tmp_path):
    root = tmp_path / "Berkeley"
    write_image(root / "images" / "1001.jpg", H, W, seed=1)
    anti_aliased = box(H, W, 2, 2, 8, 8)
    anti_aliased[2, 2:8] = 200  # a soft edge that is still object
    anti_aliased[7, 2:8] = 128  # exactly 128: RITM ignores it
    anti_aliased[8, 2:8] = 100  # a fainter edge: background
    write_mask(root / "masks" / "1001.png", anti_aliased)
    write_image(root / "images" / "1002.jpg", H, W, seed=2)
    write_mask(root / "masks" / "1002.png", box(H, W, 0, 0, 6, 6))
    write_mask(root / "masks" / "1002_2.png", box(H, W, 4, 4, 10, 10))  # overlaps the first object
    write_image(root / "images" / "1003.jpg", H, W, seed=3)
    write_mask(root / "masks" / "1003.png", np.zeros((H, W), np.uint8))  # an empty mask: refused when read
    return root


def test_berkeley_per_image_applies_ritm_thresholds_and_paints_later_masks_on_top(berkeley_root):
    dataset = create_dataset("berkeley", berkeley_root)
    assert (len(dataset), dataset.ids()) == (3, ["1001", "1002", "1003"])
    first, second = dataset[0], dataset[1]
    assert first.num_instances == 1
    assert first.labels[2, 2] == 1 and first.labels[7, 2] == 0 and first.labels[8, 2] == 0
    assert first.ignore[7, 2:8].all() and first.ignore.sum() == 6
    assert second.num_instances == 2
    assert second.labels[5, 5] == 2, "the later mask is on top where the two overlap"
    assert (second.labels == 1).sum() == 36 - 4
    with pytest.raises(UserError, match=r"1003\.png: an empty mask \(no object pixel\)"):
        dataset[2]


def test_berkeley_instances_split_gives_each_mask_exactly(berkeley_root):
    dataset = create_dataset("berkeley", berkeley_root, "test-instances")
    assert dataset.ids() == ["1001_1", "1002_1", "1002_2", "1003_1"]
    assert dataset.split == "test-instances"
    assert [dataset.image_id(i) for i in range(4)] == ["1001", "1002", "1002", "1003"]
    whole_first = dataset[1]
    assert whole_first.id == "1002_1"
    assert whole_first.labels.sum() == 36, "the overlapped object keeps its full mask"
    assert set(np.unique(whole_first.labels)) == {0, 1}
    with pytest.raises(UserError, match=r"1003\.png: an empty mask"):
        dataset[3]


def test_mask_without_image_and_size_mismatch_name_the_file(berkeley_root):
    write_mask(berkeley_root / "masks" / "2000.png", box(H, W, 0, 0, 2, 2))
    write_mask(berkeley_root / "masks" / "1003.png", box(H + 1, W, 0, 0, 2, 2))
    dataset = create_dataset("berkeley", berkeley_root)
    with pytest.raises(UserError, match=r"2000\.png: no image named 2000"):
        dataset[dataset.ids().index("2000")]
    with pytest.raises(UserError, match=r"1003\.png: mask size \(13, 16\) differs from image 1003\.jpg \(12, 16\)"):
        dataset[dataset.ids().index("1003")]


def test_davis_reads_any_channel_and_reports_an_image_without_mask(tmp_path):
    root = tmp_path / "DAVIS"
    write_image(root / "img" / "bear.jpg", H, W)
    colour = np.zeros((H, W, 3), np.uint8)
    colour[3:6, 3:9, 0] = 255  # object drawn in red only
    write_mask(root / "gt" / "bear.png", colour)
    write_image(root / "img" / "camel.jpg", H, W)
    dataset = create_dataset("davis", root)
    sample = dataset[0]
    assert sample.labels.sum() == 18 and not sample.ignore.any()
    with pytest.raises(UserError, match=r"camel\.jpg: no mask named camel"):
        dataset[1]
    (root / "gt" / "camel.png").mkdir()
    with pytest.raises(UserError, match=r"no mask named camel\.\* in .*gt \(camel\.png is there, but it is a folder\)"):
        create_dataset("davis", root)[1]
    (root / "gt" / "camel.png").rmdir()
    (root / "gt" / "camel.gif").write_bytes(b"GIF89a")
    with pytest.raises(UserError, match=r"\(camel\.gif is there, but only \.jpg, .* files are read\)"):
        create_dataset("davis", root)[1]


def test_a_16_bit_mask_that_reads_as_empty_says_why(tmp_path):
    """OpenCV's colour reading (RITM's DAVIS rule) scales 16-bit samples to 8 bits: an object at 255 becomes 0."""
    root = tmp_path / "DAVIS"
    write_image(root / "img" / "bear.jpg", H, W)
    mask = np.zeros((H, W), np.uint16)
    mask[3:6, 3:9] = 255
    (root / "gt").mkdir()
    assert cv2.imwrite(str(root / "gt" / "bear.png"), mask)
    with pytest.raises(UserError, match=r"bear\.png: an empty mask \(no object pixel\) as read: it is a 16-bit PNG"):
        create_dataset("davis", root)[0]


def test_coco_mval_keeps_one_sample_per_file_even_for_the_same_picture(tmp_path):
    root = tmp_path / "COCO_MVal"
    for stem in ("airplane00_000000281693", "airplane01_000000281693"):
        write_image(root / "img" / f"{stem}.jpg", H, W)
        write_mask(root / "gt" / f"{stem}.png", box(H, W, 1, 1, 5, 5))
    dataset = create_dataset("coco_mval", root)
    assert dataset.ids() == ["airplane00_000000281693", "airplane01_000000281693"]
    assert all(dataset[i].num_instances == 1 for i in range(2))


def test_custom_folder_and_configured_root(tmp_path, monkeypatch):
    root = tmp_path / "mine"
    write_image(root / "images" / "cat.png", H, W)
    write_mask(root / "masks" / "cat.png", box(H, W, 0, 0, 4, 4))
    write_mask(root / "masks" / "cat_2.png", box(H, W, 6, 6, 9, 9, value=200))
    use_dataset_config(monkeypatch, tmp_path, roots={"custom": str(root)})
    dataset = create_dataset("custom", None, "mine")
    assert dataset.root == str(root) and dataset.split == "mine"
    assert dataset[0].num_instances == 2


def test_a_name_written_in_another_unicode_form_is_said_so(tmp_path):
    """An image named café in composed form, its mask in decomposed form (as macOS writes names): the message said
    "no image named café" beside a café.png the user could see."""
    composed, decomposed = "caf\u00e9", "cafe\u0301"
    root = tmp_path / "mine"
    write_image(root / "images" / f"{composed}.png", H, W)
    write_mask(root / "masks" / f"{decomposed}.png", box(H, W, 0, 0, 4, 4))
    dataset = create_dataset("custom", root)
    with pytest.raises(UserError) as refused:
        dataset[dataset.ids().index(decomposed)]
    assert f"({composed}.png is there, but its name is the same letters written in another Unicode form" in str(
        refused.value
    )


def test_images_in_subfolders_are_said_not_read(tmp_path):
    """images/cats/a.jpg and images/dogs/a.jpg beside images/a.jpg: one item, exit 0 and not a word of the others."""
    root = tmp_path / "mine"
    for folder in ("", "cats/", "dogs/"):
        write_image(root / "images" / f"{folder}a.png", H, W)
        write_mask(root / "masks" / f"{folder}a.png", box(H, W, 0, 0, 4, 4))
    (root / "images" / "notes").mkdir()
    (root / "images" / "mac").mkdir()  # what a Mac leaves there is no image of the dataset (a hidden file) ...
    (root / "images" / "mac" / "._a.png").write_bytes(b"\0\5\26\7")
    write_image(root / "images" / ".thumbnails" / "a.png", H, W)  # ... nor a hidden folder
    with pytest.warns(UnreadSubfolderWarning) as told:
        dataset = create_dataset("custom", root)
    assert dataset.ids() == ["a"]
    assert [str(warning.message) for warning in told] == [
        f"{root / folder}: its subfolders cats/, dogs/ hold images, which are not read: only the files directly in "
        f"{folder}/ are (a COCO-format JSON's file_name may name subfolders)"
        for folder in ("images", "masks")
    ]


def test_missing_root_names_the_config_entry(tmp_path, monkeypatch):
    config = use_dataset_config(monkeypatch, tmp_path, roots={"berkeley": None})
    with pytest.raises(UserError, match=rf"roots\.berkeley in {config}"):
        create_dataset("berkeley", None)


def soft_edged_square() -> np.ndarray:
    """A square of 255 whose rows carry the values a soft or palette mask holds: 1, 50, 128, 200."""
    mask = box(H, W, 2, 2, 10, 10)
    for row, value in zip((2, 3, 4, 5), (1, 50, 128, 200), strict=True):
        mask[row, 2:10] = value
    return mask


@pytest.mark.parametrize(
    ("family", "images", "masks"), [("grabcut", "data_GT", "boundary_GT"), ("berkeley", "images", "masks")]
)
def test_grabcut_and_berkeley_read_a_mask_as_ritms_grabcut_loader(tmp_path, family, images, masks):
    """RITM ignores 128, relabels the values above 128 to 1 and takes 1 for the object: so an original 1 is object,
    the other values under 128 background."""
    root = tmp_path / family
    write_image(root / images / "1001.jpg", H, W)
    write_mask(root / masks / "1001.png", soft_edged_square())
    sample = create_dataset(family, root)[0]
    rows = [(bool(sample.labels[row, 5]), bool(sample.ignore[row, 5])) for row in (2, 3, 4, 5, 6)]
    assert rows == [(True, False), (False, False), (False, True), (True, False), (True, False)]


@pytest.mark.parametrize("family", ["davis", "coco_mval"])
def test_davis_and_coco_mval_read_a_mask_as_ritms_davis_loader(tmp_path, family):
    """Any value above 0 in any colour channel, as cv2.imread gives the colour channels: an alpha channel is not
    one of them."""
    root = tmp_path / family
    write_image(root / "img" / "bear.jpg", H, W)
    with_alpha = np.zeros((H, W, 4), np.uint8)
    with_alpha[..., :3] = soft_edged_square()[..., None]
    with_alpha[..., 3] = 255  # opaque everywhere, object or not
    (root / "gt").mkdir(parents=True)
    assert cv2.imwrite(str(root / "gt" / "bear.png"), with_alpha)
    sample = create_dataset(family, root)[0]
    assert np.array_equal(sample.labels > 0, soft_edged_square() > 0) and not sample.ignore.any()


def _grabcut_tree(root):
    write_image(root / "data_GT" / "1001.jpg", H, W, seed=1)
    write_mask(root / "boundary_GT" / "1001.bmp", box(H, W, 2, 2, 8, 8))
    write_image(root / "data_GT" / "1002.bmp", H, W, seed=2)
    write_mask(root / "boundary_GT" / "1002.bmp", box(H, W, 4, 4, 10, 10))
    return ["data_GT", "boundary_GT"]


def _berkeley_tree(root):
    write_image(root / "images" / "1001.jpg", H, W, seed=1)
    write_mask(root / "masks" / "1001.png", box(H, W, 2, 2, 8, 8))
    write_mask(root / "masks" / "1001_2.png", box(H, W, 6, 6, 10, 10))
    return ["images", "masks"]


def _img_gt_tree(root):
    write_image(root / "img" / "bear.jpg", H, W, seed=1)
    write_mask(root / "gt" / "bear.png", box(H, W, 2, 2, 8, 8))
    return ["img", "gt"]


def _ade20k_tree(root):
    scene = root / "images" / "validation" / "a" / "abbey"
    seg = np.zeros((H, W, 3), np.uint8)
    seg[2:8, 2:8] = (10, 5, 7)
    write_image(scene / "ADE_val_00000001.jpg", H, W)
    write_mask(scene / "ADE_val_00000001_seg.png", seg)
    return ["images/validation/a/abbey"]


@pytest.mark.parametrize(
    ("family", "build", "split"),
    [
        ("grabcut", _grabcut_tree, "test"),
        ("berkeley", _berkeley_tree, "test"),
        ("berkeley", _berkeley_tree, "test-instances"),
        ("custom", _berkeley_tree, "test"),
        ("davis", _img_gt_tree, "test"),
        ("coco_mval", _img_gt_tree, "test"),
        ("ade20k", _ade20k_tree, "val"),
    ],
)
def test_hidden_files_a_mac_leaves_beside_the_images_are_not_read(tmp_path, family, build, split):
    """A copy made on macOS holds `._NAME.jpg` (AppleDouble notes of junk bytes, not pictures) beside every file
    and a `.DS_Store` in every folder: reading stopped at the first one ("cannot read this image", or "no mask named
    ._1001.*"). They are no images of the dataset: the folder reads as the same items without them."""
    clean, copied = tmp_path / "clean", tmp_path / "copied_from_a_mac"
    build(clean)
    folders = build(copied)
    junk = np.random.default_rng(0).bytes(4096)
    for folder in folders:
        for path in sorted((copied / folder).iterdir()):
            (path.parent / f"._{path.name}").write_bytes(junk)
        (copied / folder / ".DS_Store").write_bytes(junk)
    expected, dataset = create_dataset(family, clean, split), create_dataset(family, copied, split)
    assert dataset.ids() == expected.ids()
    for index in range(len(expected)):
        sample, wanted = dataset[index], expected[index]
        assert sample.id == wanted.id
        for field in ("image", "labels", "ignore"):
            assert np.array_equal(getattr(sample, field), getattr(wanted, field)), (sample.id, field)

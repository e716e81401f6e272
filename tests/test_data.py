import cv2
import numpy as np
import pytest

from isegprobe.data import create_dataset
from isegprobe.data.builtin import render_scene
from isegprobe.data.image_io import is_truncated, read_rgb
from isegprobe.data.preprocess import make_view, parse_views
from isegprobe.errors import UserError


def test_grabcut_has_50_instances_and_42_ignore_bands(grabcut_root):
    dataset = create_dataset("grabcut", grabcut_root)
    assert len(dataset) == 50
    samples = [dataset[i] for i in range(len(dataset))]
    assert all(sample.num_instances == 1 for sample in samples)
    assert sum(sample.ignore.any() for sample in samples) == 42
    assert all(not (sample.ignore & (sample.labels > 0)).any() for sample in samples)


def test_grabcut_wrong_root_names_the_folder(tmp_path):
    with pytest.raises(UserError, match="data_GT"):
        create_dataset("grabcut", tmp_path)


def test_corrupt_grabcut_image_is_named(grabcut_three):
    broken = next((grabcut_three / "data_GT").iterdir())
    broken.write_bytes(b"not an image")
    dataset = create_dataset("grabcut", grabcut_three)
    with pytest.raises(UserError, match=broken.name):
        [dataset[i] for i in range(len(dataset))]


def test_builtin_scenes_are_deterministic_and_masks_exact():
    first_image, first_labels = render_scene(1234)
    second_image, second_labels = render_scene(1234)
    assert np.array_equal(first_image, second_image) and np.array_equal(first_labels, second_labels)
    dataset = create_dataset("builtin", split="test")
    assert len(dataset) == 12
    for index in range(len(dataset)):
        sample = dataset[index]
        ids = np.unique(sample.labels)
        assert list(ids) == list(range(ids.max() + 1)), "instance ids are 0..K with none empty"
        assert sample.num_instances >= 1


def test_views_flip_and_scale_crop_move_masks_with_images():
    sample = create_dataset("builtin", split="train")[0]
    identity, hflip, zoom = (
        make_view(sample, spec, 64, "stretch", seed=7) for spec in parse_views("identity,hflip,scale2")
    )
    assert np.array_equal(hflip.labels, identity.labels[:, ::-1])
    y0, x0, y1, x1 = zoom.crop_box
    assert (y1 - y0, x1 - x0) == (120, 160)
    assert zoom.valid_box == (0, 0, 64, 64)


def test_letterbox_keeps_aspect_and_records_valid_box():
    sample = create_dataset("builtin", split="test")[0]
    view = make_view(sample, parse_views("identity")[0], 64, "letterbox", seed=0)
    assert view.valid_box == (8, 0, 56, 64)
    assert (view.image[:8] == 0).all() and (view.labels[:8] == 0).all()


@pytest.mark.parametrize("text", ["hflip,identity", "identity,zoom", "identity,scale0.5", "identity,identity"])
def test_bad_views_are_refused(text):
    with pytest.raises(UserError, match="--views"):
        parse_views(text)


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_a_truncated_image_file_is_refused_with_its_name(tmp_path, suffix):
    """OpenCV alone decodes a cut JPEG into grey without an error; the reader refuses it."""
    pixels = np.random.default_rng(0).integers(0, 255, (48, 64, 3), np.uint8)
    whole = cv2.imencode(suffix, pixels)[1].tobytes()
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(whole[: len(whole) * 2 // 3])
    with pytest.raises(UserError, match=f"cut{suffix}: this image file is truncated"):
        read_rgb(path)
    path.write_bytes(whole + b"extra bytes some cameras append")
    assert read_rgb(path).shape == (48, 64, 3), "data after the end of the image is allowed"
    assert is_truncated(whole[:-2]) and not is_truncated(whole)

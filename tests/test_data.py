import re
import threading
import warnings

import cv2
import numpy as np
import pytest
from PIL import Image

from isegprobe.data import create_dataset, image_io
from isegprobe.data.builtin import render_scene
from isegprobe.data.image_io import is_truncated, read_rgb
from isegprobe.data.instance_maps import FEW_IDS, as_uint16_ids, compact_labels, ids_present, valid_areas
from isegprobe.data.preprocess import drawn_orientation, make_view, orient, oriented_copy, parse_views
from isegprobe.data.sample import Sample
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


def test_grabcut_lists_its_images_in_ritms_order_and_names_one_without_a_mask(grabcut_three):
    """RITM's loader walks the images sorted by file name; an image whose mask is missing is an item that reading
    names, not one left out without a word."""
    images = sorted(path.name for path in (grabcut_three / "data_GT").iterdir())
    assert create_dataset("grabcut", grabcut_three).ids() == [name.rsplit(".", 1)[0] for name in images]
    missing = grabcut_three / "boundary_GT" / f"{images[1].rsplit('.', 1)[0]}.bmp"
    missing.unlink()
    dataset = create_dataset("grabcut", grabcut_three)
    assert len(dataset) == 3
    with pytest.raises(UserError, match=rf"{images[1]}: no mask named {missing.stem}\.\* in .*boundary_GT"):
        dataset[1]


def test_the_test_only_benchmarks_refuse_another_split(grabcut_three, tmp_path):
    """A store named grabcut-train would hold the test images."""
    with pytest.raises(UserError, match="--split: grabcut has splits test, not 'train'"):
        create_dataset("grabcut", grabcut_three, "train")
    with pytest.raises(UserError, match="--split: davis has splits test, not 'nosuch'"):
        create_dataset("davis", tmp_path, "nosuch")
    assert create_dataset("grabcut", grabcut_three, "test-instances").split == "test-instances"


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


def test_training_windows_are_ritms_crops_at_three_quarters_to_five_quarters_scale():
    sample = create_dataset("builtin", split="train")[0]  # 240 x 320
    specs = parse_views("identity,crop1,crop2")
    sides = []
    for index in range(40):
        for view_index, spec in enumerate(specs[1:], start=1):
            window = make_view(sample, spec, 64, "stretch", seed=index * 1009 + view_index)
            y0, x0, y1, x1 = window.crop_box
            assert y1 - y0 == x1 - x0, "a square region of the image, so the resize keeps its aspect"
            assert 64 / 1.25 - 1 <= y1 - y0 <= 64 / 0.75 + 1
            assert 0 <= y0 and y1 <= 240 and 0 <= x0 and x1 <= 320, "it fits, so it lies inside the image"
            expected = cv2.resize(sample.labels[y0:y1, x0:x1], (64, 64), interpolation=cv2.INTER_NEAREST)
            assert np.array_equal(window.labels, expected) and window.valid_box == (0, 0, 64, 64)
            sides.append(y1 - y0)
    assert min(sides) < 56 and max(sides) > 78, "the scale is drawn over the whole range"
    again = make_view(sample, specs[1], 64, "stretch", seed=1009 + 1)
    assert again.crop_box == make_view(sample, specs[1], 64, "stretch", seed=1009 + 1).crop_box


def dihedral_index(flip: bool, vflip: bool, turns: int) -> tuple:
    """An orientation, named by where it sends a 2 x 3 array's corners (two orientations that move pixels alike
    are one)."""
    probe = np.arange(6).reshape(2, 3)
    if flip:
        probe = probe[:, ::-1]
    if vflip:
        probe = probe[::-1]
    return tuple(np.rot90(probe, turns).ravel()) + (np.rot90(probe, turns).shape,)


def test_rcrop_is_crops_window_oriented_as_the_research_codes_flip_and_rotate90_draw():
    """rcrop<k>: the same window as crop<k>, then flipped and turned with albumentations' probabilities (Flip: with
    probability 1/2 horizontal, vertical or both; then RandomRotate90: with probability 1/2, 0-3 quarter turns)."""
    sample = create_dataset("builtin", split="train")[0]
    window, oriented = parse_views("identity,crop1,rcrop1")[1:]
    counts: dict[tuple, int] = {}
    draws = 4000
    for seed in range(draws):
        plain, turned = (make_view(sample, spec, 32, "stretch", seed=seed) for spec in (window, oriented))
        assert turned.crop_box == plain.crop_box, "the same window of the image"
        drawn = drawn_orientation(seed)
        assert np.array_equal(turned.image, orient(plain.image, drawn))
        assert np.array_equal(turned.labels, orient(plain.labels, drawn))
        key = dihedral_index(drawn.flip, drawn.vflip, drawn.turns)
        counts[key] = counts.get(key, 0) + 1
    expected: dict[tuple, float] = {}
    flips = [((False, False), 1 / 2)] + [(pair, 1 / 6) for pair in ((True, False), (False, True), (True, True))]
    turns = [(0, 1 / 2 + 1 / 8)] + [(k, 1 / 8) for k in (1, 2, 3)]
    for (flip, vflip), p_flip in flips:
        for k, p_turn in turns:
            key = dihedral_index(flip, vflip, k)
            expected[key] = expected.get(key, 0.0) + p_flip * p_turn
    assert set(counts) == set(expected) and len(expected) == 8, "all eight orientations, transposes included"
    for key, probability in expected.items():
        assert abs(counts[key] / draws - probability) < 0.025, (key, counts[key] / draws, probability)


def test_a_window_larger_than_the_image_is_padded_around_it():
    sample = create_dataset("builtin", split="train")[0]  # 240 x 320: every window of a 448 px store is larger
    window = make_view(sample, parse_views("identity,crop1")[1], 448, "stretch", seed=3)
    y0, x0, y1, x1 = window.crop_box
    side = y1 - y0
    assert side > 320 and y0 == -((side - 240) // 2) and x0 == -((side - 320) // 2), "centred, as PadIfNeeded"
    top, left, bottom, right = window.valid_box
    assert (top, left) == (round(-y0 * 448 / side), round(-x0 * 448 / side))
    assert (bottom, right) == (round((240 - y0) * 448 / side), round((320 - x0) * 448 / side))
    assert (window.image[: top - 1] == 0).all() and (window.labels[: top - 1] == 0).all()
    assert window.image[top + 1 : bottom - 1, left + 1 : right - 1].any()


@pytest.mark.parametrize("shape", [(1, 500), (500, 1), (2, 3000), (1, 1)])
def test_a_window_keeps_at_least_a_pixel_of_an_image_thinner_than_one(shape):
    # A window wider than a one-pixel-high image shrinks its row to less than a working pixel, whose box rounded to
    # no pixel at all for some windows: `cache verify` then refused the item, and --repair wrote the same box again.
    labels = np.zeros(shape, np.uint16)
    labels[..., : max(1, shape[-1] // 2)] = 1
    sample = Sample("thin", np.full((*shape, 3), 90, np.uint8), labels, np.zeros(shape, bool))
    for seed in range(200):
        for spec in parse_views("identity,crop1,rcrop1")[1:]:
            y0, x0, y1, x1 = make_view(sample, spec, 64, "stretch", seed=seed).valid_box
            assert 0 <= y0 < y1 <= 64 and 0 <= x0 < x1 <= 64, (seed, spec.name, (y0, x0, y1, x1))


@pytest.mark.parametrize(
    ("views", "message"),
    [
        ("identity,crop0", "unknown view 'crop0'"),
        ("identity,rcrop0", "unknown view 'rcrop0'"),
        ("identity,crop99999999999999999999", "unknown view 'crop99999999999999999999'"),
        ("identity,scale1", "unknown view 'scale1'"),
        ("identity,", "an empty view name (two commas together, or one at an end)"),
        ("identity,,hflip", "an empty view name"),
        ("hflip,identity", "the first view must be identity"),
        ("identity,hflip,hflip", "a view is listed twice"),
    ],
)
def test_views_that_name_no_view_are_refused(views, message):
    with pytest.raises(UserError, match=re.escape(message)):
        parse_views(views)


# What each view does to the identity view's arrays.
MOVES = {
    "vflip": lambda a: a[::-1],
    "rot90": lambda a: np.rot90(a, 1),
    "rot180": lambda a: np.rot90(a, 2),
    "rot270": lambda a: np.rot90(a, 3),
}


@pytest.mark.parametrize("name", MOVES)
def test_vertical_flips_and_quarter_turns_move_image_masks_and_valid_box_together(name):
    sample = create_dataset("builtin", split="test")[0]
    identity, other = (make_view(sample, spec, 64, "letterbox", seed=0) for spec in parse_views(f"identity,{name}"))
    move = MOVES[name]
    for array in ("image", "labels", "ignore"):
        assert np.array_equal(getattr(other, array), move(getattr(identity, array))), array
    real = np.zeros((64, 64), bool)
    real[slice(*identity.valid_box[0::2]), slice(*identity.valid_box[1::2])] = True
    y0, x0, y1, x1 = other.valid_box
    assert np.flatnonzero(move(real).any(axis=1))[[0, -1]].tolist() == [y0, y1 - 1]
    assert np.flatnonzero(move(real).any(axis=0))[[0, -1]].tolist() == [x0, x1 - 1]


def test_letterbox_keeps_aspect_and_records_valid_box():
    sample = create_dataset("builtin", split="test")[0]
    view = make_view(sample, parse_views("identity")[0], 64, "letterbox", seed=0)
    assert view.valid_box == (8, 0, 56, 64)
    assert (view.image[:8] == 0).all() and (view.labels[:8] == 0).all()


@pytest.mark.parametrize(
    "text",
    ["hflip,identity", "identity,zoom", "identity,scale0.5", "identity,identity", "identity,crop", "identity,cropA"],
)
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


def test_a_whole_jpeg_with_any_data_appended_is_not_called_truncated():
    """A phone's motion photo appends a video: random bytes hold a scan marker after their last end marker in about
    half of the files, which the rule "an end after the last scan" refused. A thumbnail in the EXIF segment, a
    whole JPEG of its own before the image's first scan, must not make a cut image look whole either."""
    pixels = np.random.default_rng(0).integers(0, 255, (48, 64, 3), np.uint8)
    whole = cv2.imencode(".jpg", pixels)[1].tobytes()
    trailers = [np.random.default_rng(seed).bytes(1 << 16) for seed in range(40)]
    assert sum(b"\xff\xda" in trailer[trailer.rfind(b"\xff\xd9") + 1 :] for trailer in trailers) > 10
    assert not any(is_truncated(whole + trailer) for trailer in trailers)
    thumbnail = cv2.imencode(".jpg", pixels[:8, :8])[1].tobytes()
    exif = b"\xff\xe1" + (len(thumbnail) + 8).to_bytes(2, "big") + b"Exif\0\0" + thumbnail
    with_thumbnail = whole[:2] + exif + whole[2:]
    assert cv2.imdecode(np.frombuffer(with_thumbnail, np.uint8), cv2.IMREAD_COLOR).shape == (48, 64, 3)
    assert not is_truncated(with_thumbnail)
    assert is_truncated(with_thumbnail[: len(with_thumbnail) * 2 // 3])


@pytest.mark.parametrize("ids", [(0, 1, 2, 3), (0, 2, 5, 9), (1, 2), (0, 3), (0,)])
def test_compact_labels_numbers_the_ids_present_1_to_k_in_order(ids):
    """Against np.unique's numbering, with ids already 1..K (converted only) and with gaps (looked up)."""
    labels = np.random.default_rng(len(ids)).choice(np.array(ids, np.int32), size=(48, 64))
    present = np.unique(labels)
    expected = np.searchsorted(present[present > 0], labels) + 1
    expected[labels == 0] = 0
    compacted = compact_labels(labels)
    assert compacted.dtype == np.uint16 and np.array_equal(compacted, expected)


@pytest.mark.parametrize(
    ("dtype", "largest"),
    [
        ("bool", 1),
        ("uint8", FEW_IDS - 1),
        ("int32", FEW_IDS),
        ("uint8", 255),
        ("uint16", 2**16 - 1),
        ("int32", 2**16 - 1),
        ("int32", 2**16),
        ("int64", 70_000),
    ],
)
def test_ids_present_are_those_np_bincount_counts(dtype, largest):
    """A comparison per id below FEW_IDS, OpenCV's histogram below 2**16, np.bincount above: the same ids, up to
    the largest a map can hold, in contiguous and strided maps; 0 and the largest id always drawn, so both ends of
    the range are checked."""
    rng = np.random.default_rng(largest)
    for _ in range(20):
        ids = np.concatenate(([0, largest], rng.integers(0, largest + 1, rng.integers(0, 4))))
        labels = rng.choice(ids, size=tuple(rng.integers(1, 200, 2))).astype(dtype)
        for view in (labels, labels[::2, ::3]):
            if view.size:
                assert np.array_equal(ids_present(view), np.bincount(view.ravel().astype(np.intp)) > 0)


@pytest.mark.parametrize(("dtype", "largest"), [("bool", 1), ("uint8", 3), ("uint16", FEW_IDS - 1), ("uint16", 300)])
def test_valid_areas_are_np_bincount_of_the_valid_pixels(dtype, largest):
    """The same array (values, length, dtype) as np.bincount(labels[valid]): ids missing from the valid part at
    the top of the range shorten it, and an empty valid part gives an empty array."""
    rng = np.random.default_rng(largest)
    for trial in range(30):
        labels = rng.integers(0, largest + 1, tuple(rng.integers(1, 60, 2))).astype(dtype)
        valid = rng.random(labels.shape) < (0.0, 0.05, 0.5, 1.0)[trial % 4]
        expected = np.bincount(labels[valid].ravel())
        areas = valid_areas(labels, valid)
        assert areas.dtype == expected.dtype and np.array_equal(areas, expected)


def test_ids_present_refuses_a_negative_id_as_bincount_does():
    with pytest.raises(ValueError):
        ids_present(np.array([[3, -1]], np.int32))


def test_label_maps_whose_ids_fit_become_uint16_and_others_stay_as_they_are():
    labels = np.array([[0, 3], [65535, 1]], np.int64)
    narrowed = as_uint16_ids(labels)
    assert narrowed.dtype == np.uint16 and np.array_equal(narrowed, labels)
    for kept in (
        np.array([[0, -1]], np.int64),
        np.array([[0, 65536]], np.int32),
        np.array([[0, 2]], np.uint8),
        np.zeros((0, 3), np.int64),
        np.array([[0.0, 1.0]]),
    ):
        assert as_uint16_ids(kept) is kept


@pytest.mark.parametrize("name", ["hflip", "vflip", "rot90", "rot180", "rot270"])
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "bool"])
def test_oriented_copies_are_numpys_flips_and_turns(name, dtype):
    (spec,) = parse_views(f"identity,{name}")[1:]
    rng = np.random.default_rng(0)
    shape = (5, 7, 3) if dtype == "uint8" else (5, 7)  # not square: a turn swaps the sides
    array = (rng.integers(0, 1000, shape) % (2 if dtype == "bool" else 1000)).astype(dtype)
    copied = oriented_copy(array, spec)
    assert copied.dtype == array.dtype and copied.flags.c_contiguous
    assert np.array_equal(copied, orient(array, spec))


def test_an_images_orientation_tag_is_warned_of_once_and_its_pixels_are_read_as_stored(tmp_path, monkeypatch):
    """A phone photo's tag was ignored without a word: a mask drawn on the turned picture misaligned silently."""
    monkeypatch.setattr(image_io, "_TOLD_OF_ORIENTATION", threading.Event())
    exif = Image.Exif()
    exif[0x0112] = 6
    pixels = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    for name in ("a.png", "b.png"):
        Image.fromarray(pixels).save(tmp_path / name, exif=exif)
    Image.fromarray(pixels).save(tmp_path / "plain.png")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        read = [read_rgb(tmp_path / name) for name in ("plain.png", "a.png", "b.png")]
    assert all(np.array_equal(image, pixels) for image in read), "read as stored, not turned"
    (warning,) = caught
    assert issubclass(warning.category, image_io.OrientationTagWarning)
    assert "a.png: its EXIF orientation tag turns it (a quarter turn clockwise) for display" in str(warning.message)

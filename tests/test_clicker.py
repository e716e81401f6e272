"""The clicker against clicks worked out by hand, and against an independent scipy version of RITM's rule."""

from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.ndimage import distance_transform_edt, uniform_filter

from isegprobe.inference import Click, Clicker
from isegprobe.inference import clicker as clicker_module
from isegprobe.inference.clicker import BatchClicker, area_depth_bound, bounding_box

GRABCUT = Path(__file__).resolve().parents[2] / "shared" / "data" / "GrabCut"


def mask(picture: str) -> np.ndarray:
    """'#' is True, '.' is False, one text line per row."""
    return np.array([[c == "#" for c in line.strip()] for line in picture.strip().splitlines()])


EMPTY = mask("""
.......
.......
.......
.......
.......
""")
# A 3x3 square: its centre (2, 3) is 2 px from the background, every other pixel 1 px.
SQUARE = mask("""
.......
..###..
..###..
..###..
.......
""")


def test_first_click_goes_to_the_deepest_point():
    assert Clicker(SQUARE).next_click(EMPTY) == Click(2, 3, True)


def test_none_is_the_empty_prediction():
    assert Clicker(SQUARE).next_click() == Click(2, 3, True)


def test_tie_between_deepest_points_goes_to_the_first_in_row_major_order():
    # (2, 2), (2, 3) and (2, 4) are all 2 px deep.
    wide = mask("""
    .......
    .#####.
    .#####.
    .#####.
    .......
    """)
    assert Clicker(wide).next_click(EMPTY) == Click(2, 2, True)


def test_image_border_counts_as_the_region_edge():
    # With the one-pixel border, column 0 is 1 px deep and (1, 1) is the first pixel 2 px deep; without it
    # column 0 would be 3 px from column 3 and the click would land at (0, 0).
    left = mask("""
    ###....
    ###....
    ###....
    ###....
    ###....
    """)
    assert Clicker(left).next_click(EMPTY) == Click(1, 1, True)


def test_equal_depth_false_negative_and_false_positive_click_negative():
    gt = mask("""
    .......
    .......
    .#.....
    .......
    .......
    """)
    pred = mask("""
    .......
    .......
    .....#.
    .......
    .......
    """)
    assert Clicker(gt).next_click(pred) == Click(2, 5, False)


def test_deeper_error_decides_the_sign():
    dot_right = mask("""
    .......
    .......
    .....#.
    .......
    .......
    """)
    assert Clicker(SQUARE).next_click(dot_right) == Click(2, 3, True)
    dot_left = mask("""
    .......
    .......
    .#.....
    .......
    .......
    """)
    assert Clicker(dot_left).next_click(SQUARE) == Click(2, 3, False)


def test_ignored_pixels_are_no_error():
    gt = mask("""
    .......
    .......
    .#.....
    .......
    .......
    """)
    # The false positive band is 2 px deep at (1, 5), deeper than the 1 px false negative at (2, 1).
    pred = mask("""
    ....###
    ....###
    ....###
    ....###
    ....###
    """)
    assert Clicker(gt).next_click(pred) == Click(1, 5, False)
    assert Clicker(gt, ignore=pred).next_click(pred) == Click(2, 1, True)


def test_ignored_pixels_are_never_clicked():
    ignore = np.zeros_like(SQUARE)
    ignore[2, 3] = True
    clicker = Clicker(SQUARE, ignore=ignore)
    # Without its centre the square is a ring of 1 px deep pixels, clicked in row-major order.
    ring = [(1, 2), (1, 3), (1, 4), (2, 2), (2, 4), (3, 2), (3, 3), (3, 4)]
    assert [clicker.next_click(EMPTY) for _ in ring] == [Click(y, x, True) for y, x in ring]
    assert clicker.next_click(EMPTY) == Click(0, 0, False)


def test_clicked_pixel_is_not_clicked_again():
    clicker = Clicker(SQUARE)
    assert clicker.next_click(EMPTY) == Click(2, 3, True)
    assert clicker.next_click(EMPTY) == Click(1, 2, True)
    assert clicker.clicks == [Click(2, 3, True), Click(1, 2, True)]


def test_clicked_pixel_is_not_clicked_again_for_false_positives():
    clicker = Clicker(EMPTY)
    assert clicker.next_click(SQUARE) == Click(2, 3, False)
    assert clicker.next_click(SQUARE) == Click(1, 2, False)


def test_no_error_left_clicks_negative_at_the_origin_as_ritm_does():
    corner = mask("""
    ##.....
    ##.....
    .......
    .......
    .......
    """)
    clicker = Clicker(corner)
    assert clicker.next_click(corner) == Click(0, 0, False)
    assert clicker.next_click(corner) == Click(0, 0, False)


def test_reset_forgets_clicks():
    clicker = Clicker(SQUARE)
    clicker.next_click(EMPTY)
    clicker.reset()
    assert clicker.clicks == []
    assert clicker.next_click(EMPTY) == Click(2, 3, True)


@pytest.mark.parametrize(
    "pred",
    [np.zeros((5, 6), dtype=bool), SQUARE.astype(np.float32), SQUARE.astype(np.uint8)],
    ids=["wrong shape", "probabilities", "integers"],
)
def test_rejects_predictions_that_are_not_boolean_masks_of_the_right_size(pred):
    with pytest.raises(ValueError):
        Clicker(SQUARE).next_click(pred)


def scipy_clicks(gt, ignore, preds):
    """RITM's rule written again on scipy's exact EDT, to compare with the OpenCV-based clicker."""
    not_clicked = np.ones(gt.shape, dtype=bool)
    clicks = []
    for pred in preds:
        depths = []
        for error in (gt & ~pred & ~ignore, ~gt & pred & ~ignore):
            depths.append(distance_transform_edt(np.pad(error, 1))[1:-1, 1:-1] * not_clicked)
        fn_depth, fp_depth = depths
        is_positive = fn_depth.max() > fp_depth.max()
        depth = fn_depth if is_positive else fp_depth
        ys, xs = np.nonzero(depth == depth.max())
        clicks.append(Click(int(ys[0]), int(xs[0]), bool(is_positive)))
        not_clicked[ys[0], xs[0]] = False
    return clicks


def blobs(rng, shape, fill):
    return uniform_filter(rng.random(shape), size=3, mode="constant") > 1 - fill


@pytest.mark.parametrize("seed", range(300))
def test_matches_scipy_version_on_random_masks(seed):
    # Kept to masks at most 11 px on one side: no pixel is then deeper than 6 px, and up to there OpenCV's float32
    # distances are exactly scipy's. Deeper, OpenCV rounds some equal distances apart by one bit, so ties can differ.
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(2, 12)), int(rng.integers(2, 40)))
    if seed % 2:
        shape = shape[::-1]
    gt = blobs(rng, shape, fill=rng.uniform(0.2, 0.8))
    ignore = blobs(rng, shape, fill=0.1) if seed % 3 == 0 else np.zeros(shape, dtype=bool)
    preds = [np.zeros(shape, dtype=bool)] + [gt ^ blobs(rng, shape, fill=rng.uniform(0.05, 0.5)) for _ in range(9)]

    clicker = Clicker(gt, ignore)
    assert [clicker.next_click(pred) for pred in preds] == scipy_clicks(gt, ignore, preds)


@pytest.mark.parametrize("seed", range(100))
def test_a_prediction_that_stays_the_same_clicks_as_the_rule_does(seed):
    # A settled prediction leaves the same error regions click after click: their transforms are reused, and the
    # clicked pixels must still be left out anew each time.
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(2, 12)), int(rng.integers(2, 40)))
    gt = blobs(rng, shape, fill=rng.uniform(0.2, 0.8))
    ignore = blobs(rng, shape, fill=0.1) if seed % 3 == 0 else np.zeros(shape, dtype=bool)
    settled = gt ^ blobs(rng, shape, fill=rng.uniform(0.05, 0.5))
    other = gt ^ blobs(rng, shape, fill=0.3)
    preds = [np.zeros(shape, dtype=bool), settled, settled.copy(), settled, other, settled, settled, settled]

    clicker = Clicker(gt, ignore)
    assert [clicker.next_click(pred) for pred in preds] == scipy_clicks(gt, ignore, preds)


def largest_depth(region):
    return float(clicker_module._transform(region, bounding_box(region)).max())


def digital_disk(squared_radius, centre=(0, 0), reach=None):
    """The pixels nearer than sqrt(squared_radius) to `centre`, in a square from -reach to reach around (0, 0)."""
    reach = reach or int(np.sqrt(squared_radius)) + 2
    ys, xs = np.mgrid[-reach : reach + 1, -reach : reach + 1]
    return (ys - centre[0]) ** 2 + (xs - centre[1]) ** 2 < squared_radius


def test_no_region_is_deeper_than_its_area_allows_and_round_ones_nearly_are():
    # Digital disks are as deep as an area allows; small ones are where the bound's sqrt(1/2) is needed.
    ratios = []
    for squared_radius in range(1, 2000, 7):
        for centre in [(0, 0), (0.5, 0), (0.5, 0.5), (0.3, 0.8)]:
            disk = digital_disk(squared_radius, centre)
            ratios.append(largest_depth(disk) / area_depth_bound(int(disk.sum())))
    rng = np.random.default_rng(0)
    for _ in range(300):
        shape = tuple(rng.integers(1, 80, 2))
        region = blobs(rng, shape, fill=rng.uniform(0.1, 0.9))
        if region.any():
            ratios.append(largest_depth(region) / area_depth_bound(int(region.sum())))
    assert max(ratios) <= 1
    assert max(ratios) > 0.98, "the bound is tight for round regions"
    assert area_depth_bound(0) == 0


def test_a_thin_band_in_a_wide_box_is_not_transformed_beside_a_deeper_region(monkeypatch):
    # The false positives ring the object two pixels wide: their box allows a depth of 52, their area 15.2, and the
    # false negatives (the whole disk) are 40 deep, so the band cannot decide the click.
    gt = digital_disk(40**2, reach=60)
    pred = digital_disk(52**2, reach=60) & ~digital_disk(50**2, reach=60)
    transformed = []
    transform = clicker_module._transform

    def counted(error, box):
        transformed.append(box)
        return transform(error, box)

    monkeypatch.setattr(clicker_module, "_transform", counted)

    made = Clicker(gt)
    click = made.next_click(pred)

    assert transformed == [bounding_box(gt)]
    assert [click] == scipy_clicks(gt, np.zeros_like(gt), [pred])


def test_batch_clicker_clicks_as_each_object_alone_in_order_and_gives_opencv_its_threads_back():
    rng = np.random.default_rng(0)
    gts = [blobs(rng, (60, 80), fill=0.5) for _ in range(5)]
    preds = [[gt ^ blobs(rng, gt.shape, fill=0.3) for _ in range(4)] for gt in gts]
    alone = []
    for gt, object_preds in zip(gts, preds, strict=True):
        clicker = Clicker(gt)
        alone.append([clicker.next_click(pred) for pred in object_preds])
    threads = cv2.getNumThreads()
    cv2.setNumThreads(3)
    try:
        clickers = [Clicker(gt) for gt in gts]
        with BatchClicker() as batch:
            for step in range(4):
                made = batch.click(clickers, [c.errors(p[step]) for c, p in zip(clickers, preds, strict=True)])
                assert made == [clicker.clicks[-1] for clicker in clickers]
                assert cv2.getNumThreads() == 3
        assert [clicker.clicks for clicker in clickers] == alone
    finally:
        cv2.setNumThreads(threads)


def grabcut_masks(count):
    paths = sorted(GRABCUT.glob("boundary_GT/*.bmp"))
    if not paths:
        pytest.skip(f"GrabCut not found at {GRABCUT}")
    for path in paths[:count]:
        label = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        yield path.stem, label == 255, label == 128


def test_real_masks_get_a_click_at_the_exact_deepest_error():
    """On GrabCut masks, each click is a deepest error pixel by exact distance, outside the ignore band."""
    kernel = np.ones((15, 15), np.uint8)
    for name, gt, ignore in grabcut_masks(12):
        as_uint8 = gt.astype(np.uint8)
        preds = [
            np.zeros_like(gt),
            cv2.erode(as_uint8, kernel).astype(bool),
            cv2.dilate(as_uint8, kernel).astype(bool),
            np.roll(gt, 20, axis=1),
        ]
        clicker = Clicker(gt, ignore)
        not_clicked = np.ones(gt.shape, dtype=bool)
        for pred in preds:
            click = clicker.next_click(pred)
            fn = distance_transform_edt(np.pad(gt & ~pred & ~ignore, 1))[1:-1, 1:-1] * not_clicked
            fp = distance_transform_edt(np.pad(~gt & pred & ~ignore, 1))[1:-1, 1:-1] * not_clicked
            depth = fn if click.is_positive else fp
            assert not ignore[click.y, click.x], name
            assert depth[click.y, click.x] == max(fn.max(), fp.max()) > 0, name
            not_clicked[click.y, click.x] = False

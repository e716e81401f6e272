"""The tensor clicker against OpenCV's transform and against `Clicker`: the same depths, pixels, clicks and IoUs."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from scipy.ndimage import uniform_filter

from isegprobe.inference import tensor_clicker
from isegprobe.inference.clicker import Click, Clicker
from isegprobe.inference.tensor_clicker import TensorClicks, deepest_pixels, float32_root, lowest_alike_square

GRABCUT = Path(__file__).resolve().parents[2] / "shared" / "data" / "GrabCut"


def opencv_depths(error: np.ndarray) -> np.ndarray:
    """`Clicker`'s transform of a whole map: OpenCV's own code (IPP off), the image edge a zero border."""
    used_ipp = cv2.ipp.useIPP()
    cv2.ipp.setUseIPP(False)
    try:
        return cv2.distanceTransform(np.pad(error, 1).view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    finally:
        cv2.ipp.setUseIPP(used_ipp)


def random_map(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Noise, blobs, overlapping disks, a blocky picture scaled up, thin lines, everything or nothing."""
    height, width = shape
    kind = rng.integers(7)
    if kind == 0:
        return rng.random(shape) < rng.uniform(0.3, 0.95)
    if kind == 1:
        return uniform_filter(rng.random(shape), size=3, mode="constant") > rng.uniform(0.2, 0.7)
    if kind == 2:
        disks = np.zeros(shape, np.uint8)
        for _ in range(rng.integers(1, 5)):
            centre = (int(rng.integers(width)), int(rng.integers(height)))
            cv2.circle(disks, centre, int(rng.integers(1, max(height, width))), 1, -1)
        return disks.astype(bool)
    if kind == 3:
        blocks = (rng.random((4, 5)) < 0.6).astype(np.uint8)
        return cv2.resize(blocks, (width, height), interpolation=cv2.INTER_NEAREST).astype(bool)
    if kind == 4:
        lines = np.zeros(shape, np.uint8)
        for _ in range(rng.integers(1, 4)):
            ends = [(int(rng.integers(width)), int(rng.integers(height))) for _ in range(2)]
            cv2.line(lines, *ends, 1, int(rng.integers(1, 6)))
        return lines.astype(bool)
    return np.full(shape, kind == 5)


@pytest.mark.parametrize("seed", range(40))
def test_deepest_pixels_are_the_maximum_and_first_pixel_of_opencvs_transform(seed):
    # Six maps of different sizes in one padded batch, as TensorClicks holds its objects: what lies beyond a map's
    # own size must act as its image edge.
    rng = np.random.default_rng(seed)
    shapes = [(int(rng.integers(1, 90)), int(rng.integers(1, 90))) for _ in range(6)]
    errors = [random_map(rng, shape) for shape in shapes]
    clicked = [rng.random(shape) < rng.choice([0.0, 0.002, 0.05]) for shape in shapes]
    height, width = (max(sizes) for sizes in zip(*shapes, strict=True))
    batch, batch_clicked = np.zeros((6, height, width), bool), np.zeros((6, height, width), bool)
    for index, (error, done) in enumerate(zip(errors, clicked, strict=True)):
        batch[index, : error.shape[0], : error.shape[1]] = error
        batch_clicked[index, : error.shape[0], : error.shape[1]] = done

    depths, pixels = deepest_pixels(torch.from_numpy(batch), torch.from_numpy(batch_clicked))

    for index, (error, done) in enumerate(zip(errors, clicked, strict=True)):
        expected = opencv_depths(error)
        expected[done] = 0
        first = int(np.argmax(expected))
        y, x = divmod(int(pixels[index]), width)
        assert depths[index].numpy().view(np.int32) == expected.flat[first].view(np.int32)
        assert (y, x) == divmod(first, error.shape[1]) if expected.flat[first] > 0 else (y, x) == (0, 0)


def test_maps_transformed_in_groups_give_the_same_depths_and_pixels(monkeypatch):
    rng = np.random.default_rng(3)
    errors = torch.from_numpy(np.stack([random_map(rng, (40, 50)) for _ in range(7)]))
    clicked = torch.zeros_like(errors)
    clicked.view(7, -1)[torch.arange(7), deepest_pixels(errors, clicked)[1]] = True  # each map's own deepest pixel
    whole = deepest_pixels(errors, clicked)
    monkeypatch.setattr(tensor_clicker, "_PIXELS_AT_ONCE", 3 * 40 * 50)
    grouped = deepest_pixels(errors, clicked)
    assert all(torch.equal(a, b) for a, b in zip(whole, grouped, strict=True))


def exact_depths_computed(monkeypatch, error: np.ndarray) -> int:
    """How many pixels' exact depths `deepest_pixels` computes to find the deepest pixel of one map, which it must
    find where OpenCV's transform has it."""
    computed = []
    exact_squares = tensor_clicker._exact_squares

    def counted(column_squares, rows, maps, pixels):
        computed.append(len(pixels))
        return exact_squares(column_squares, rows, maps, pixels)

    monkeypatch.setattr(tensor_clicker, "_exact_squares", counted)
    errors = torch.from_numpy(error[None])
    depths, pixels = deepest_pixels(errors, torch.zeros_like(errors))
    expected = opencv_depths(error)
    assert (depths.item(), pixels.item()) == (expected.max(), int(np.argmax(expected)))
    return sum(computed)


@pytest.mark.parametrize("blob", [9, 15, 31])
def test_exact_depths_are_computed_for_few_pixels_of_blobby_errors(monkeypatch, blob):
    # Blobs as an untrained probe's errors look: the column and row distances alone left 4020 to 18759 of these
    # maps' pixels to compute a whole row for (each its exact depth), the bounds over the offset ladder leave a few.
    error = uniform_filter(np.random.default_rng(0).random((240, 320)), size=blob) > 0.5
    assert exact_depths_computed(monkeypatch, error) < 0.01 * np.count_nonzero(error)


@pytest.mark.parametrize(("seed", "specks"), [(0, 0.0005), (2, 0.0005), (0, 0.002)])
def test_exact_depths_are_computed_for_few_more_pixels_than_can_be_deepest_in_a_speckled_region(
    monkeypatch, seed, specks
):
    # A poor probe's error can cover most of the image with single pixels left out here and there. The offset ladder
    # steps over such a speck, so the bounds near it are loose: the pixel with the highest bound lay shallow, and its
    # depth alone left 5 to 20 times the pixels whose bounds reach the deepest one's depth to compute.
    rng = np.random.default_rng(seed)
    error = (uniform_filter(rng.random((240, 320)), size=31) > 0.45) & ~(rng.random((240, 320)) < specks)
    computed = exact_depths_computed(monkeypatch, error)

    errors = torch.from_numpy(error[None])
    column_squares = tensor_clicker._distance_along(errors, 1).square()
    bounds = tensor_clicker._depth_bounds(column_squares, tensor_clicker._distance_along(errors, 2))
    deepest_square = torch.tensor([round(float(opencv_depths(error).max()) ** 2)])
    assert computed <= 1.5 * int((bounds >= lowest_alike_square(deepest_square)).sum())


def test_roots_are_rounded_as_opencv_rounds_them():
    # One pixel outside the error in the corner of a 900 x 900 map: every sum of two squares up to 2 * 899**2.
    error = np.ones((900, 900), bool)
    error[0, 0] = False
    rows, columns = np.mgrid[:900, :900]
    squares = torch.from_numpy(rows.astype(np.int64) ** 2 + columns**2)
    expected = cv2.distanceTransform(error.view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    np.testing.assert_array_equal(float32_root(squares).numpy(), expected)


def test_no_integer_below_the_lowest_alike_square_rounds_to_its_root():
    squares = np.unique(np.random.default_rng(0).integers(1, 2**31, 20_000))
    lowest = lowest_alike_square(torch.from_numpy(squares)).numpy()
    roots = np.sqrt(squares.astype(np.float64)).astype(np.float32)
    below = np.sqrt((lowest - 1).astype(np.float64)).astype(np.float32)
    assert np.all((below < roots) | (lowest == 1))
    # Distinct integers do share roots at these sizes, so the margin is needed.
    assert np.any(np.sqrt((squares - 1).astype(np.float64)).astype(np.float32) == roots)


def tensor_and_opencv_clicks(gts, ignores, predictions, device="cpu"):
    """Both clickers over the same predictions: (tensor clicks, OpenCV clicks, tensor IoUs, OpenCV IoUs)."""
    tensor = TensorClicks(gts, ignores, torch.device(device))
    clickers = [Clicker(gt, ignore) for gt, ignore in zip(gts, ignores, strict=True)]
    errors = [clicker.errors() for clicker in clickers]
    ious = []
    for preds in predictions:
        tensor.click()
        for clicker, regions in zip(clickers, errors, strict=True):
            clicker.click(regions)
        tensor.observe([torch.from_numpy(pred).to(device) for pred in preds])
        errors = [clicker.errors(pred) for clicker, pred in zip(clickers, preds, strict=True)]
        ious.append([regions.iou() for regions in errors])
    return tensor.clicks, [clicker.clicks for clicker in clickers], tensor.ious(), np.float32(ious).T


@pytest.mark.parametrize("seed", range(20))
def test_tensor_clicks_are_the_clickers_on_random_objects(seed):
    rng = np.random.default_rng(seed)
    shapes = [(int(rng.integers(1, 70)), int(rng.integers(1, 70))) for _ in range(5)]
    gts = [random_map(rng, shape) for shape in shapes]
    ignores = [rng.random(shape) < 0.05 if index % 2 else np.zeros(shape, bool) for index, shape in enumerate(shapes)]
    predictions = [
        [gt ^ (rng.random(gt.shape) < rng.choice([0.0, 0.05, 0.5])) for gt in gts],
        [np.zeros_like(gt) for gt in gts],
        [np.ones_like(gt) for gt in gts],
        [cv2.dilate(gt.view(np.uint8), np.ones((5, 5), np.uint8)).astype(bool) for gt in gts],
        [gt.copy() for gt in gts],
        [np.zeros_like(gt) for gt in gts],
    ]
    tensor_clicks, clicks, tensor_ious, ious = tensor_and_opencv_clicks(gts, ignores, predictions)
    assert tensor_clicks == clicks
    np.testing.assert_array_equal(tensor_ious, ious)


def test_an_object_whose_every_error_is_clicked_gets_a_negative_click_at_the_origin():
    gt = np.zeros((5, 7), bool)
    gt[3, 4] = True
    empty = [np.zeros_like(gt)]
    tensor_clicks, clicks, _, _ = tensor_and_opencv_clicks([gt], [np.zeros_like(gt)], [empty, empty])
    assert tensor_clicks == clicks == [[Click(3, 4, True), Click(0, 0, False)]]


@pytest.mark.parametrize("mask", [torch.zeros(5, 6, dtype=torch.bool), torch.zeros(6, 7)], ids=["shape", "dtype"])
def test_refuses_predictions_that_are_not_boolean_masks_of_the_objects_size(mask):
    clicks = TensorClicks([np.ones((6, 7), bool)], [np.zeros((6, 7), bool)], torch.device("cpu"))
    with pytest.raises(ValueError, match=r"prediction 0 must be a boolean mask of shape \(6, 7\)"):
        clicks.observe([mask])


def test_tensor_clicks_are_the_clickers_on_grabcut_objects():
    """Real objects of different sizes in one batch, ignore bands included; the first click's error is the whole
    object, over 100 px deep."""
    paths = sorted(GRABCUT.glob("boundary_GT/*.bmp"))[:6]
    if not paths:
        pytest.skip(f"GrabCut not found at {GRABCUT}")
    labels = [cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) for path in paths]
    gts, ignores = [label == 255 for label in labels], [label == 128 for label in labels]
    kernel = np.ones((15, 15), np.uint8)
    predictions = [
        [cv2.erode(gt.view(np.uint8), kernel).astype(bool) for gt in gts],
        [cv2.dilate(gt.view(np.uint8), kernel).astype(bool) for gt in gts],
        [np.roll(gt, 20, axis=1) for gt in gts],
    ]
    tensor_clicks, clicks, tensor_ious, ious = tensor_and_opencv_clicks(gts, ignores, predictions)
    assert len({gt.shape for gt in gts}) > 1
    assert tensor_clicks == clicks
    np.testing.assert_array_equal(tensor_ious, ious)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_clicks_are_the_clickers():
    rng = np.random.default_rng(7)
    shapes = [(int(rng.integers(100, 480)), int(rng.integers(100, 640))) for _ in range(8)]
    gts = [random_map(rng, shape) for shape in shapes]
    ignores = [rng.random(shape) < 0.02 for shape in shapes]
    predictions = [[gt ^ (rng.random(gt.shape) < rate) for gt in gts] for rate in (0.0, 0.01, 0.3)]
    tensor_clicks, clicks, tensor_ious, ious = tensor_and_opencv_clicks(gts, ignores, predictions, "cuda")
    assert tensor_clicks == clicks
    np.testing.assert_array_equal(tensor_ious, ious)

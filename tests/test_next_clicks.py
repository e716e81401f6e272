"""The iterative training clicks' candidates with the losing region's transform left out where its depth bound
allows: the same candidates as transforming both regions of the whole image, which is RITM's rule
(`get_next_points`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from isegprobe.training import next_clicks
from isegprobe.training.next_clicks import ErrorRegion, deepest_errors


def whole_image_depth(mask: np.ndarray) -> np.ndarray:
    """RITM's transform: cv2's 5x5 chamfer over the whole image, padded so that the image border counts."""
    return cv2.distanceTransform(np.pad(mask, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]


def both_transforms_candidates(false_negative: np.ndarray, false_positive: np.ndarray) -> tuple[list[int], bool]:
    fn_depth, fp_depth = whole_image_depth(false_negative), whole_image_depth(false_positive)
    is_positive = fn_depth.max() > fp_depth.max()
    depth = fn_depth if is_positive else fp_depth
    return np.flatnonzero(depth > max(fn_depth.max(), fp_depth.max()) / 2.0).tolist(), bool(is_positive)


def shapes(rng: np.random.Generator, size: tuple[int, int]) -> Iterator[np.ndarray]:
    """Masks of every kind the transforms meet: blobs, scattered pixels, thin lines, rings, regions on the image
    border, a whole image and none."""
    height, width = size
    rows, cols = np.mgrid[:height, :width]
    for _ in range(4):
        cy, cx = rng.uniform(-0.2, 1.2, 2) * (height, width)
        ry, rx = rng.uniform(1, max(height, width, 4) / 2, 2)
        yield ((rows - cy) / ry) ** 2 + ((cols - cx) / rx) ** 2 < 1
    for density in (0.02, 0.5, 0.97):
        yield rng.random(size) < density
    line = np.zeros(size, dtype=bool)
    line[rng.integers(height), :] = True
    line[:, rng.integers(width)] = True
    yield line
    radius = np.hypot(rows - height / 2, cols - width / 2)
    yield (radius > height / 5) & (radius < height / 5 + rng.integers(1, 6))
    corner = np.zeros(size, dtype=bool)
    corner[: rng.integers(1, height + 1), : rng.integers(1, width + 1)] = True
    yield corner
    yield np.ones(size, dtype=bool)
    yield np.zeros(size, dtype=bool)


@pytest.mark.parametrize("size", [(1, 1), (1, 9), (7, 3), (31, 47), (120, 96)])
def test_no_region_is_said_unable_to_reach_a_depth_that_its_transform_reaches(size: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(size))
    for _ in range(8):
        for mask in shapes(rng, size):
            largest = float(whole_image_depth(mask).max())
            region = ErrorRegion(mask)
            assert region.max_depth == largest
            if mask.any():
                assert region.may_reach(largest, tie_wins=True)
                assert region.may_reach(np.nextafter(largest, 0, dtype=np.float32), tie_wins=False)
            assert not region.may_reach(max(size) / 2 + 1, tie_wins=True)


@pytest.mark.parametrize("size", [(1, 1), (5, 5), (31, 47), (120, 96)])
def test_deepest_errors_are_those_of_both_transforms(size: tuple[int, int]) -> None:
    rng = np.random.default_rng(size[0] * 1000 + size[1])
    for _ in range(4):
        masks = list(shapes(rng, size))
        for false_negative in masks:
            for false_positive in masks:
                false_positive = false_positive & ~false_negative
                candidates, is_positive = deepest_errors(false_negative, false_positive)
                assert (candidates.tolist(), is_positive) == both_transforms_candidates(false_negative, false_positive)


def test_equal_depths_go_to_the_false_positives_whichever_is_transformed_first() -> None:
    # Equal squares: equal bounds and maxima, so the tie rule alone decides (RITM: positive only when the negatives
    # reach strictly further); a square beside a smaller one is the case where the smaller is not transformed.
    for negatives_size, positives_size in ((6, 6), (3, 9), (9, 3), (5, 6), (6, 5), (2, 3), (3, 2)):
        false_negative = np.zeros((30, 30), dtype=bool)
        false_positive = np.zeros((30, 30), dtype=bool)
        false_negative[2 : 2 + negatives_size, 2 : 2 + negatives_size] = True
        false_positive[15 : 15 + positives_size, 15 : 15 + positives_size] = True
        candidates, is_positive = deepest_errors(false_negative, false_positive)
        assert (candidates.tolist(), is_positive) == both_transforms_candidates(false_negative, false_positive)


def test_a_region_that_cannot_win_and_an_empty_one_are_not_transformed(monkeypatch: pytest.MonkeyPatch) -> None:
    transformed: list[int] = []
    transform = next_clicks.region_depth
    monkeypatch.setattr(
        next_clicks, "region_depth", lambda mask, box: transformed.append(mask.sum()) or transform(mask, box)
    )
    large, small = np.zeros((40, 40), dtype=bool), np.zeros((40, 40), dtype=bool)
    large[5:35, 5:35] = True
    small[37:39, 1:30] = True  # two rows: depth at most 1, against 15 inside the large square
    for false_negative, false_positive in ((large, small), (small, large), (large, np.zeros_like(large))):
        transformed.clear()
        deepest_errors(false_negative, false_positive)
        assert transformed == [large.sum()]


def test_deepest_errors_on_grabcut_objects_and_shifted_predictions(grabcut_root: Path) -> None:
    for path in sorted((grabcut_root / "boundary_GT").iterdir())[:12]:
        truth = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) == 255
        for shift in ((0, 9), (-15, 4), (40, -30), (0, 0)):
            predicted = np.roll(truth, shift, axis=(0, 1))
            false_negative, false_positive = truth & ~predicted, ~truth & predicted
            candidates, is_positive = deepest_errors(false_negative, false_positive)
            assert (candidates.tolist(), is_positive) == both_transforms_candidates(false_negative, false_positive)

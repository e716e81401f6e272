"""A training click's error region transformed over its bounding box has the depths RITM's transform of the whole
zero-padded image gives it, bit for bit, with OpenCV's IPP on (as the opencv-python wheels run it) and off."""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np
import pytest

from isegprobe.inference.clicker import bounding_box
from isegprobe.training import region_depth as module
from isegprobe.training.region_depth import boxes_are_exact, check_masks, region_depth


def whole_image_depth(mask: np.ndarray) -> np.ndarray:
    return cv2.distanceTransform(np.pad(mask, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]


def masks(rng: np.random.Generator, size: tuple[int, int], count: int) -> Iterator[np.ndarray]:
    """Ellipses, rings, a polygon less itself shifted (the band a slightly wrong prediction leaves), noise in a
    rectangle, and boxes 0 to 3 pixels from each edge of the image."""
    height, width = size
    rows, cols = np.mgrid[:height, :width]
    for index in range(count):
        kind = index % 5
        if kind == 0:
            (cy, cx), (ry, rx) = rng.uniform(0, 1, 2) * size, rng.uniform(1, max(size) / 2, 2)
            yield ((rows - cy) / ry) ** 2 + ((cols - cx) / rx) ** 2 < 1
        elif kind == 1:
            radius = np.hypot(rows - rng.uniform(0, height), cols - rng.uniform(0, width))
            inner = rng.uniform(1, max(size) / 2)
            yield (radius > inner) & (radius < inner + rng.integers(2, 30))
        elif kind == 2:
            polygon = np.zeros(size, np.uint8)
            cv2.fillPoly(polygon, [rng.integers(0, (width, height), (7, 2)).astype(np.int32)], 1)
            truth = polygon.astype(bool)
            yield truth & ~np.roll(truth, tuple(rng.integers(-9, 10, 2)), axis=(0, 1))
        elif kind == 3:
            noise = rng.random(size) < rng.uniform(0.05, 0.95)
            top, left = rng.integers(0, height), rng.integers(0, width)
            noise[:top], noise[:, :left] = False, False
            noise[top + rng.integers(1, height + 1) :], noise[:, left + rng.integers(1, width + 1) :] = False, False
            yield noise
        else:
            margins = rng.integers(0, 4, 4)
            inner = rng.random((height - margins[0] - margins[2], width - margins[1] - margins[3])) < 0.85
            inner[0, rng.integers(inner.shape[1])] = inner[-1, rng.integers(inner.shape[1])] = True
            inner[rng.integers(inner.shape[0]), 0] = inner[rng.integers(inner.shape[0]), -1] = True
            mask = np.zeros(size, dtype=bool)
            mask[margins[0] : height - margins[2], margins[1] : width - margins[3]] = inner
            yield mask


@pytest.mark.parametrize("use_ipp", [True, False])
@pytest.mark.parametrize("size", [(448, 448), (240, 320), (97, 131), (9, 40)])
def test_a_box_has_the_whole_images_depths(size: tuple[int, int], use_ipp: bool) -> None:
    rng = np.random.default_rng(size[0] * 7 + size[1])
    was_using_ipp = cv2.ipp.useIPP()
    cv2.ipp.setUseIPP(use_ipp)
    try:
        for mask in masks(rng, size, 60):
            if not mask.any():
                continue
            top, left, bottom, right = box = bounding_box(mask)
            np.testing.assert_array_equal(region_depth(mask, box), whole_image_depth(mask)[top:bottom, left:right])
    finally:
        cv2.ipp.setUseIPP(was_using_ipp)


def test_the_check_finds_windows_cut_at_any_column_where_ipp_groups_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    # Windows cut at the ring's own column: where this OpenCV gives other bits for some masks (IPP grouping columns),
    # the check must see it on its own masks and fall back to the whole image, which keeps the depths exact.
    monkeypatch.setattr(module, "COLUMN_ALIGNMENT", 1)
    boxes_are_exact.cache_clear()
    try:
        rng = np.random.default_rng(11)
        differ = []
        for mask in masks(rng, (448, 448), 100):
            if mask.any():
                top, left, bottom, right = box = bounding_box(mask)
                cut = module._window_depth(mask, box)
                differ.append(not np.array_equal(cut, whole_image_depth(mask)[top:bottom, left:right]))
        if not any(differ):
            pytest.skip(
                "this OpenCV gives the same depths for a window cut at any column: nothing for the check to find"
            )
        assert not boxes_are_exact(cv2.ipp.useIPP())
        for mask in check_masks():
            top, left, bottom, right = box = bounding_box(mask)
            np.testing.assert_array_equal(region_depth(mask, box), whole_image_depth(mask)[top:bottom, left:right])
    finally:
        boxes_are_exact.cache_clear()

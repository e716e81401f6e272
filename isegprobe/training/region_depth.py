"""How deep each pixel of a training click's error region lies: RITM's 5x5 chamfer transform of the whole image,
computed over the region's bounding box.

RITM transforms the whole image, padded with zeros (`cv2.distanceTransform(mask, DIST_L2, 5)`), and reads only the
region's pixels. Each pass of the transform takes a pixel's depth from its 5x5 neighbours', and the ring of pixels
around a tight bounding box lies outside the region, at depth 0 and nearer than anything beyond it, so OpenCV's own
integer transform of the box and its ring gives the whole image's depths. The opencv-python wheels run it through
Intel IPP, in float32, whose last bits also depend on where a column lies: a window cut at any column gave other
bits in 27 of 900 random masks, one cut at a column of the padded image divisible by 4 in none of 2700. The window
therefore starts at a multiple of `COLUMN_ALIGNMENT` (64: room for a build or CPU that groups more columns), and
each process first checks, once for IPP on and once off, that windows give the whole image's depths on masks where
unaligned cuts do not (`boxes_are_exact`); where they do not (another OpenCV build or CPU), the whole image is
transformed as before. Late in training the errors are a fraction of the image, and so is the transform: 0.91 ->
0.48 ms per image for GrabCut's objects shifted a few pixels, at 448 px.
"""

from __future__ import annotations

from functools import cache

import cv2
import numpy as np

from isegprobe.inference.clicker import Box, bounding_box, ringed_box

COLUMN_ALIGNMENT = 64
_CHECK_SIZE = 448
_CHECK_MASKS = 16


def region_depth(mask: np.ndarray, box: Box) -> np.ndarray:
    """float32 [bottom - top, right - left]: RITM's depth of each pixel in `box`, the bounding box of the region
    `mask` (bool [H, W]), the image's edge counting as the region's border."""
    if boxes_are_exact(cv2.ipp.useIPP()):
        return _window_depth(mask, box)
    top, left, bottom, right = box
    return _window_depth(mask, (0, 0, *mask.shape))[top:bottom, left:right]


def _window_depth(mask: np.ndarray, box: Box) -> np.ndarray:
    """The transform of the zero-padded image's window around `box` (`ringed_box`), its columns from a multiple of
    COLUMN_ALIGNMENT of the padded image at or before the ring's; the box's part of it."""
    left = box[1]
    first_column = left // COLUMN_ALIGNMENT * COLUMN_ALIGNMENT  # the ring's column in the padded image is `left`
    margin = left + 1 - first_column
    return cv2.distanceTransform(ringed_box(mask, box, margin), cv2.DIST_L2, 5)[1:-1, margin:-1]


@cache
def boxes_are_exact(use_ipp: bool) -> bool:
    """Whether windows give the whole image's depths in this process's OpenCV, with IPP on or off (for the calling
    thread, whose setting it is): checked on 16 ellipses in a 448 px image, 4 of which a window cut at the ring's
    own column gives other bits where IPP groups columns by four."""
    used_ipp = cv2.ipp.useIPP()
    cv2.ipp.setUseIPP(use_ipp)
    try:
        for mask in check_masks():
            top, left, bottom, right = box = bounding_box(mask)
            whole = _window_depth(mask, (0, 0, *mask.shape))
            if not np.array_equal(_window_depth(mask, box), whole[top:bottom, left:right]):
                return False
        return True
    finally:
        cv2.ipp.setUseIPP(used_ipp)


def check_masks() -> list[np.ndarray]:
    """The ellipses `boxes_are_exact` checks, the same in every process."""
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[:_CHECK_SIZE, :_CHECK_SIZE]
    masks = []
    for _ in range(_CHECK_MASKS):
        (cy, cx), (ry, rx) = rng.uniform(0, _CHECK_SIZE, 2), rng.uniform(2, _CHECK_SIZE / 2, 2)
        masks.append(((rows - cy) / ry) ** 2 + ((cols - cx) / rx) ** 2 < 1)
    return masks

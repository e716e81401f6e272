"""The simulated user of the evaluation: RITM's click rule, kept exact so NoC here and in RITM-family papers agree."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Click:
    """One click, in pixel coordinates of the masks the clicker was given."""

    y: int
    x: int
    is_positive: bool


class Clicker:
    """Clicks the pixel deepest inside the larger error region, as RITM's evaluation does.

    Per click: false negatives (gt and not pred) and false positives (pred and not gt), both outside the ignore
    region, get an exact Euclidean distance transform on a one-pixel zero border, so the image edge counts as the
    region's edge. Clicked pixels are set to 0. The click is positive only if the deepest false negative is strictly
    deeper than the deepest false positive (a tie clicks negative), and goes to the first deepest pixel in row-major
    order.

    Without any error left the click is negative at (0, 0), wherever that pixel is: RITM does this too (both maps
    are all zero, so the tie goes to the false-positive map and its first maximum), and keeping it keeps the clicks
    that follow, and so the IoU curves, identical.

    The transform is OpenCV's, called as RITM calls it (DIST_L2, DIST_MASK_PRECISE, i.e. mask size 0). Its float32
    results for equal true distances can differ in the last bit from pixel to pixel (from sqrt(37) on, OpenCV 5.0), and
    that decides some ties; a different transform (scipy's EDT) would break those ties differently from RITM.
    """

    def __init__(self, gt: np.ndarray, ignore: np.ndarray | None = None) -> None:
        _check_mask("gt", gt, np.shape(gt))
        if ignore is None:
            ignore = np.zeros_like(gt)
        _check_mask("ignore", ignore, gt.shape)
        self.gt = gt
        self.ignore = ignore
        self.clicks: list[Click] = []
        self._not_clicked = np.ones(gt.shape, dtype=bool)

    def reset(self) -> None:
        """Forget all clicks, to simulate another run on the same object."""
        self.clicks = []
        self._not_clicked = np.ones(self.gt.shape, dtype=bool)

    def next_click(self, pred: np.ndarray | None = None) -> Click:
        """Compute the click a user would make on `pred`, record it and return it.

        `pred` is the current binary prediction; None is the empty prediction the first click is made against.
        """
        if pred is None:
            pred = np.zeros_like(self.gt)
        _check_mask("pred", pred, self.gt.shape)
        fn_depth = self._depth(self.gt & ~pred)
        fp_depth = self._depth(~self.gt & pred)
        is_positive = bool(fn_depth.max() > fp_depth.max())
        depth = fn_depth if is_positive else fp_depth
        y, x = np.unravel_index(np.argmax(depth), depth.shape)
        click = Click(y=int(y), x=int(x), is_positive=is_positive)
        self.clicks.append(click)
        self._not_clicked[y, x] = False
        return click

    def _depth(self, error: np.ndarray) -> np.ndarray:
        """Distance of each error pixel to the nearest non-error pixel, image border included; 0 where clicked."""
        padded = np.pad(error & ~self.ignore, 1, mode="constant", constant_values=0).astype(np.uint8)
        distance = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
        return distance * self._not_clicked


def _check_mask(name: str, mask: np.ndarray, shape: tuple[int, ...]) -> None:
    if not isinstance(mask, np.ndarray) or mask.dtype != bool or mask.ndim != 2:
        got = f"{mask.dtype} {mask.shape}" if isinstance(mask, np.ndarray) else type(mask).__name__
        raise ValueError(f"{name} must be a 2-D boolean numpy array (threshold probabilities first), got {got}")
    if mask.shape != shape:
        raise ValueError(f"{name} has shape {mask.shape}, expected {shape}")

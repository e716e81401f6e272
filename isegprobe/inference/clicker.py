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


@dataclass(frozen=True)
class ErrorRegions:
    """A prediction's false negatives and false positives outside the ignore region.

    They are what the next click answers, and with the object's area (outside the ignore region) they give the
    prediction's IoU without another pass over the masks: intersection = area - |fn|, union = area + |fp|, the same
    integers `metrics.iou` counts.
    """

    false_negative: np.ndarray  # bool [H, W]
    false_positive: np.ndarray  # bool [H, W]
    object_area: int

    def iou(self) -> float:
        """The prediction's IoU, as `metrics.iou(gt, pred, ignore)` computes it (1.0 for an empty union)."""
        union = self.object_area + np.count_nonzero(self.false_positive)
        if union == 0:
            return 1.0
        return (self.object_area - np.count_nonzero(self.false_negative)) / union


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

    The transform is OpenCV's, called as RITM calls it (DIST_L2, DIST_MASK_PRECISE, i.e. mask size 0), and always
    its own code: each value is the float32 square root of the exact squared distance, a value that depends on that
    integer alone, so only the error region's bounding box (with its zero border) is transformed. OpenCV would hand
    images under 2**14 pixels, or all images when it runs on one thread, to IPP, whose float32 values for equal
    distances differ in the last bit from pixel to pixel and from call to call (OpenCV issue 24082): ties there
    would go one way or the other by chance. IPP is turned off for this thread around the call, so the clicks are the
    ones RITM gets from OpenCV's own code (on several threads, for images of 128 x 128 pixels and more), every time.
    """

    def __init__(self, gt: np.ndarray, ignore: np.ndarray | None = None) -> None:
        _check_mask("gt", gt, np.shape(gt))
        if ignore is None:
            ignore = np.zeros_like(gt)
        _check_mask("ignore", ignore, gt.shape)
        self.gt = gt
        self.ignore = ignore
        self.clicks: list[Click] = []
        self._object = gt & ~ignore
        self._background = ~gt & ~ignore
        self._object_area = int(np.count_nonzero(self._object))

    def reset(self) -> None:
        """Forget all clicks, to simulate another run on the same object."""
        self.clicks = []

    def errors(self, pred: np.ndarray | None = None) -> ErrorRegions:
        """The error regions of `pred` (None: the empty prediction), for `click` and for the prediction's IoU."""
        if pred is None:
            pred = np.zeros_like(self.gt)
        _check_mask("pred", pred, self.gt.shape)
        return ErrorRegions(self._object & ~pred, self._background & pred, self._object_area)

    def next_click(self, pred: np.ndarray | None = None) -> Click:
        """Compute the click a user would make on `pred`, record it and return it.

        `pred` is the current binary prediction; None is the empty prediction the first click is made against.
        """
        return self.click(self.errors(pred))

    def click(self, errors: ErrorRegions) -> Click:
        """The click answering these error regions (of this object's current prediction), recorded and returned."""
        fn_depth, fn_y, fn_x = self._deepest(errors.false_negative)
        fp_depth, fp_y, fp_x = self._deepest(errors.false_positive)
        is_positive = bool(fn_depth > fp_depth)
        y, x = (fn_y, fn_x) if is_positive else (fp_y, fp_x)
        click = Click(y=y, x=x, is_positive=is_positive)
        self.clicks.append(click)
        return click

    def _deepest(self, error: np.ndarray) -> tuple[np.float32, int, int]:
        """The largest depth of a not yet clicked error pixel and the first pixel at it in row-major order; (0, 0, 0)
        without any, as the first maximum of an all-zero map."""
        rows = np.flatnonzero(error.any(axis=1))
        if rows.size == 0:
            return np.float32(0), 0, 0
        top, bottom = int(rows[0]), int(rows[-1]) + 1
        cols = np.flatnonzero(error[top:bottom].any(axis=0))
        left, right = int(cols[0]), int(cols[-1]) + 1
        depth = _transform(error[top:bottom, left:right])
        for click in self.clicks:
            y, x = click.y - top, click.x - left
            if 0 <= y < depth.shape[0] and 0 <= x < depth.shape[1]:
                depth[y, x] = 0
        index = int(np.argmax(depth))
        deepest = depth.flat[index]
        if deepest == 0:
            return np.float32(0), 0, 0
        y, x = divmod(index, depth.shape[1])
        return deepest, top + y, left + x


def _transform(error: np.ndarray) -> np.ndarray:
    """float32 distances of the error pixels to the nearest pixel outside the error, on a one-pixel zero border,
    by OpenCV's own code (IPP off for this thread meanwhile)."""
    padded = np.pad(error, 1).astype(np.uint8)
    used_ipp = cv2.ipp.useIPP()
    cv2.ipp.setUseIPP(False)
    try:
        return cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    finally:
        cv2.ipp.setUseIPP(used_ipp)


def _check_mask(name: str, mask: np.ndarray, shape: tuple[int, ...]) -> None:
    if not isinstance(mask, np.ndarray) or mask.dtype != bool or mask.ndim != 2:
        got = f"{mask.dtype} {mask.shape}" if isinstance(mask, np.ndarray) else type(mask).__name__
        raise ValueError(f"{name} must be a 2-D boolean numpy array (threshold probabilities first), got {got}")
    if mask.shape != shape:
        raise ValueError(f"{name} has shape {mask.shape}, expected {shape}")

"""The simulated user of the evaluation: RITM's click rule, kept exact so NoC here and in RITM-family papers agree."""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType

import cv2
import numpy as np

# The clickers an evaluation can run (`evaluation.resolved_clicker` resolves auto): auto, this module's (opencv), and
# tensor_clicker.py's (tensor), which makes a batch's clicks with tensor operations on the probe's device.
CLICKERS = ("auto", "opencv", "tensor")


@dataclass(frozen=True)
class Click:
    """One click, in pixel coordinates of the masks the clicker was given."""

    y: int
    x: int
    is_positive: bool


@dataclass(frozen=True)
class ErrorRegions:
    """A prediction's false negatives and false positives outside the ignore region.

    They are what the next click answers. Their areas, counted once, bound the click's depths, and with the
    object's area (outside the ignore region) give the prediction's IoU without another pass over the masks:
    intersection = area - |fn|, union = area + |fp|, the same integers `metrics.iou` counts.
    """

    false_negative: np.ndarray  # bool [H, W]
    false_positive: np.ndarray  # bool [H, W]
    object_area: int
    false_negative_area: int
    false_positive_area: int

    def iou(self) -> float:
        """The prediction's IoU, as `metrics.iou(gt, pred, ignore)` computes it (1.0 for an empty union)."""
        return float(iou_from_counts(self.object_area, self.false_negative_area, self.false_positive_area))


def iou_from_counts(object_area: np.ndarray, false_negatives: np.ndarray, false_positives: np.ndarray) -> np.ndarray:
    """IoUs (float64) from the object's area and the prediction's error counts, all outside the ignore region:
    (area - |fn|) / (area + |fp|), 1.0 where that union is empty. Arrays or numbers, broadcast."""
    union = np.add(object_area, false_positives)
    return np.where(union > 0, np.subtract(object_area, false_negatives) / np.maximum(union, 1), 1.0)


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
        self._last_transforms: dict[str, tuple[np.ndarray, Box, np.ndarray]] = {}

    def reset(self) -> None:
        """Forget all clicks, to simulate another run on the same object."""
        self.clicks = []

    def errors(self, pred: np.ndarray | None = None) -> ErrorRegions:
        """The error regions of `pred` (None: the empty prediction), for `click` and for the prediction's IoU."""
        if pred is None:
            pred = np.zeros_like(self.gt)
        _check_mask("pred", pred, self.gt.shape)
        false_negative, false_positive = self._object & ~pred, self._background & pred
        return ErrorRegions(
            false_negative,
            false_positive,
            self._object_area,
            int(np.count_nonzero(false_negative)),
            int(np.count_nonzero(false_positive)),
        )

    def next_click(self, pred: np.ndarray | None = None) -> Click:
        """Compute the click a user would make on `pred`, record it and return it.

        `pred` is the current binary prediction; None is the empty prediction the first click is made against.
        """
        return self.click(self.errors(pred))

    def click(self, errors: ErrorRegions) -> Click:
        """The click answering these error regions (of this object's current prediction), recorded and returned.

        No pixel is deeper than half the shorter side of its region's bounding box (rounded up), nor than its
        region's area allows (`area_depth_bound`): the region that could be deeper is transformed first, and the
        other only if its bound could still change the answer.
        """
        fn_box, fp_box = bounding_box(errors.false_negative), bounding_box(errors.false_positive)
        fn_bound = min(box_depth_bound(fn_box), area_depth_bound(errors.false_negative_area))
        fp_bound = min(box_depth_bound(fp_box), area_depth_bound(errors.false_positive_area))
        if fn_bound >= fp_bound:
            fn = self._deepest("fn", errors.false_negative, fn_box)
            fp = _NOTHING if fp_bound < fn[0] else self._deepest("fp", errors.false_positive, fp_box)
        else:
            fp = self._deepest("fp", errors.false_positive, fp_box)
            fn = _NOTHING if fn_bound <= fp[0] else self._deepest("fn", errors.false_negative, fn_box)
        is_positive = bool(fn[0] > fp[0])
        _, y, x = fn if is_positive else fp
        click = Click(y=y, x=x, is_positive=is_positive)
        self.clicks.append(click)
        return click

    def _deepest(self, kind: str, error: np.ndarray, box: Box) -> tuple[np.float32, int, int]:
        """The largest depth of a not yet clicked error pixel and the first pixel at it in row-major order; (0, 0, 0)
        without any, as the first maximum of an all-zero map."""
        top, left, bottom, right = box
        if top == bottom:
            return _NOTHING
        depth = self._distances(kind, error, box).copy()
        for click in self.clicks:
            y, x = click.y - top, click.x - left
            if 0 <= y < depth.shape[0] and 0 <= x < depth.shape[1]:
                depth[y, x] = 0
        index = int(np.argmax(depth))
        deepest = depth.flat[index]
        if deepest == 0:
            return _NOTHING
        y, x = divmod(index, depth.shape[1])
        return deepest, top + y, left + x

    def _distances(self, kind: str, error: np.ndarray, box: Box) -> np.ndarray:
        """The transform of the box of this kind of error region, reused while the region stays the same from one
        click to the next (as a prediction that has settled leaves it): the transform depends on the region alone."""
        top, left, bottom, right = box
        region = error[top:bottom, left:right]
        last = self._last_transforms.get(kind)
        if last is not None and last[1] == box and np.array_equal(last[0], region):
            return last[2]
        distances = _transform(error, box)
        self._last_transforms[kind] = (region.copy(), box, distances)
        return distances


class BatchClicker:
    """Clicks for a batch of objects at once, each object's transforms on one of OpenCV's threads.

    OpenCV splits one transform over its threads, whose waiting costs CPU time of its own (a third more than on one
    thread, at 240 x 320 on 2 cores). While a batch clicks, OpenCV runs on one thread and the objects are dealt out
    in as many shares as it had threads instead, this thread clicking the first share: a hand-over per share rather
    than per object (four objects on 2 cores: 0.64 -> 0.47 CPU ms a batch's click). The clicks do not depend on the
    threads.
    """

    def __enter__(self) -> BatchClicker:
        threads = cv2.getNumThreads()
        self._pool = ThreadPoolExecutor(threads - 1) if threads > 1 else None
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._pool is not None:
            self._pool.shutdown()

    def click(self, clickers: Sequence[Clicker], errors: Sequence[ErrorRegions]) -> list[Click]:
        """Each clicker's click answering its object's error regions, as `Clicker.click` makes it."""
        threads = cv2.getNumThreads()
        cv2.setNumThreads(1)
        try:
            if self._pool is None or len(clickers) == 1:
                return _clicks(clickers, errors)
            shares = min(threads, len(clickers))
            others = [self._pool.submit(_clicks, clickers[i::shares], errors[i::shares]) for i in range(1, shares)]
            clicks = [_clicks(clickers[::shares], errors[::shares]), *(share.result() for share in others)]
            return [clicks[i % shares][i // shares] for i in range(len(clickers))]
        finally:
            cv2.setNumThreads(threads)


def _clicks(clickers: Sequence[Clicker], errors: Sequence[ErrorRegions]) -> list[Click]:
    return [clicker.click(regions) for clicker, regions in zip(clickers, errors, strict=True)]


Box = tuple[int, int, int, int]  # top, left, bottom, right (exclusive); all equal for an empty region
_NOTHING = (np.float32(0), 0, 0)
_ABOVE_FLOAT32_ROUNDING = 1 + 2**-20  # a float32 depth is at most half an ulp (2**-24 of it) above the true one


def bounding_box(error: np.ndarray) -> Box:
    """(top, left, bottom, right) of the region's pixels, bottom and right exclusive."""
    left, top, width, height = cv2.boundingRect(error.view(np.uint8))
    return top, left, top + height, left + width


def box_depth_bound(box: Box) -> int:
    """The largest distance a pixel of the box can have to the nearest pixel outside it (also the training
    clicks' chamfer distance, which is at most the number of horizontal and vertical steps)."""
    top, left, bottom, right = box
    return (min(bottom - top, right - left) + 1) // 2


def area_depth_bound(area: int) -> float:
    """A bound on the largest depth in a region of `area` pixels (0 for none), a little above the float32 depth
    OpenCV gives: every pixel nearer than d to one of depth d is in the region, and their unit squares cover the
    disk of radius d - sqrt(1/2) around it, so area >= pi (d - sqrt(1/2))^2. Near the depth for a round region;
    below the box's bound for a small or thin region in a wide box (a speck beside the object, a ring round a small
    one), though a band along a large object's edge has too much area for it."""
    if area == 0:
        return 0.0
    return (math.sqrt(area / math.pi) + math.sqrt(0.5)) * _ABOVE_FLOAT32_ROUNDING


def ringed_box(error: np.ndarray, box: Box, left_margin: int = 1) -> np.ndarray:
    """uint8 window of the error region's bounding box with the one-pixel ring around it (and `left_margin` columns
    left of the box, the ring's included), as it lies in the image padded with zeros: what a transform of that
    whole padded image sees of the box.

    The pixels around a tight bounding box are not in the error, so the window is taken as it lies in the image, and
    zeros are added only where it reaches past the image's edge.
    """
    top, left, bottom, right = box
    height, width = error.shape
    y0, x0, y1, x1 = max(top - 1, 0), max(left - left_margin, 0), min(bottom + 1, height), min(right + 1, width)
    window = error[y0:y1, x0:x1].view(np.uint8)
    edges = ((1 - (top - y0), 1 - (y1 - bottom)), (left_margin - (left - x0), 1 - (x1 - right)))
    if any(any(pair) for pair in edges):
        window = np.pad(window, edges)
    return window


def _transform(error: np.ndarray, box: Box) -> np.ndarray:
    """float32 distances of the box's error pixels to the nearest pixel outside the error, the image's edge counting
    as outside, by OpenCV's own code (IPP off for this thread meanwhile)."""
    used_ipp = cv2.ipp.useIPP()
    cv2.ipp.setUseIPP(False)
    try:
        return cv2.distanceTransform(ringed_box(error, box), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    finally:
        cv2.ipp.setUseIPP(used_ipp)


def _check_mask(name: str, mask: np.ndarray, shape: tuple[int, ...]) -> None:
    if not isinstance(mask, np.ndarray) or mask.dtype != bool or mask.ndim != 2:
        got = f"{mask.dtype} {mask.shape}" if isinstance(mask, np.ndarray) else type(mask).__name__
        raise ValueError(f"{name} must be a 2-D boolean numpy array (threshold probabilities first), got {got}")
    if mask.shape != shape:
        raise ValueError(f"{name} has shape {mask.shape}, expected {shape}")

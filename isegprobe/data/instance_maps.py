"""Turning per-object masks into the instance label map a `Sample` holds, and back."""

from __future__ import annotations

from collections.abc import Iterable

import cv2
import numpy as np


def paint_instances(
    masks: Iterable[np.ndarray], shape: tuple[int, int], max_overlap_ratio: float | None = None
) -> np.ndarray:
    """uint16 [H, W]: masks painted in order, later on top, numbered 1..K.

    A mask that ends up with no visible pixel (empty, or hidden by later ones) is dropped and the rest renumbered, so
    every id in the map is a clickable object. With `max_overlap_ratio` (LVIS in RITM), a mask is skipped when more
    than that share of it, or of an object already painted, would overlap.
    """
    labels = np.zeros(shape, np.uint16)  # as the map is kept, unless there are more masks than it numbers
    areas: dict[int, int] = {}
    for index, mask in enumerate(masks, start=1):
        if index == 2**16:
            labels = labels.astype(np.int32)
        area = np.count_nonzero(mask)
        if area == 0:
            continue
        if max_overlap_ratio is not None and _overlap(labels, mask, area, areas) > max_overlap_ratio:
            continue
        labels[mask] = index
        areas[index] = area
    return compact_labels(labels)


def _overlap(labels: np.ndarray, mask: np.ndarray, area: int, areas: dict[int, int]) -> float:
    covered = np.bincount(labels[mask], minlength=1)
    ratio = (area - covered[0]) / area
    for instance, pixels in enumerate(covered[1:], start=1):
        if pixels:
            ratio = max(ratio, pixels / areas[instance])
    return ratio


def compact_labels(labels: np.ndarray) -> np.ndarray:
    """Renumber the non-zero ids of `labels` to 1..K in increasing order (uint16). Every loader worker builds one
    such map per item, so the ids present are counted in one cheap pass (`ids_present`) rather than sorted
    (np.unique), and a map whose ids are 1..K already is only converted, which saves the lookup's pass (1.5 ms on a
    640x480 map)."""
    if not labels.size:
        return labels.astype(np.uint16)
    present = ids_present(labels)
    if present[1:].all():  # already 1..K, as when no mask was hidden: the lookup would be the identity
        return labels.astype(np.uint16)
    present[0] = False
    lookup = (np.cumsum(present) * present).astype(np.uint16)
    return lookup[labels]


# Up to this many ids, a comparison per id finds those present sooner than a histogram (`ids_present`).
FEW_IDS = 16


def ids_present(labels: np.ndarray) -> np.ndarray:
    """bool [largest id + 1]: which ids occur in a non-empty map of non-negative integer ids.

    A map of a few ids (below `FEW_IDS`, as most images' objects are) is compared with each id: 0.02 to 0.035 ms a
    comparison on a 640x480 map. A histogram of a few bins takes 0.65 ms there, OpenCV's and NumPy's alike, since
    it adds to the same counters pixel after pixel, each addition waiting for the one before. Ids below 2**16 are
    counted by OpenCV's histogram of the map as uint16, where np.bincount, which first widens every pixel to 64
    bits, took 1 ms. Larger ids are counted by np.bincount."""
    top = int(labels.max())
    non_negative = labels.dtype.kind in "bu" or int(labels.min()) >= 0
    if top < FEW_IDS and non_negative:
        return np.array([(labels == value).any() for value in range(top + 1)])
    if top < 2**16 and non_negative:
        narrow = np.ascontiguousarray(labels, dtype=np.uint16).reshape(-1, 1)
        return cv2.calcHist([narrow], [0], None, [top + 1], [0, top + 1]).ravel() > 0
    return np.bincount(labels.ravel().astype(np.intp, copy=False)) > 0


def valid_areas(labels: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """`np.bincount(labels[valid])`, the same array: each id's pixels within the boolean map `valid`, up to the
    largest id found there. A map of a few ids is compared with each id (`ids_present` says why): 0.11 against
    0.74 ms for three ids at 448 px, once per training sample."""
    top = int(labels.max()) if labels.size and labels.dtype.kind in "bu" else None
    if top is None or top >= FEW_IDS:
        return np.bincount(labels[valid].ravel())
    counts = np.array([np.count_nonzero((labels == value) & valid) for value in range(top + 1)], dtype=np.intp)
    found = np.flatnonzero(counts)
    return counts[: found[-1] + 1] if len(found) else counts[:0]


def as_uint16_ids(labels: np.ndarray) -> np.ndarray:
    """The same label map as uint16 where its ids fit (a store's do: it keeps them so, and its reader hands them out
    as int64), else unchanged. The training sampler's comparisons then read a quarter of the bytes, and
    `valid_areas` counts a few ids by comparisons, which it can only do for unsigned maps: 0.69 against 1.36 ms per
    sample at 448 px, the conversion's 0.1 ms not included."""
    if labels.dtype.kind not in "iu" or labels.dtype.itemsize <= 2 or not labels.size:
        return labels
    if int(labels.min()) < 0 or int(labels.max()) > np.iinfo(np.uint16).max:
        return labels
    return labels.astype(np.uint16)

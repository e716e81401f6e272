"""Turning per-object masks into the instance label map a `Sample` holds, and back."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def paint_instances(
    masks: Iterable[np.ndarray], shape: tuple[int, int], max_overlap_ratio: float | None = None
) -> np.ndarray:
    """uint16 [H, W]: masks painted in order, later on top, numbered 1..K.

    A mask that ends up with no visible pixel (empty, or hidden by later ones) is dropped and the rest renumbered, so
    every id in the map is a clickable object. With `max_overlap_ratio` (LVIS in RITM), a mask is skipped when more
    than that share of it, or of an object already painted, would overlap.
    """
    labels = np.zeros(shape, np.int32)
    areas: dict[int, int] = {}
    for index, mask in enumerate(masks, start=1):
        area = int(mask.sum())
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
    """Renumber the non-zero ids of `labels` to 1..K in increasing order (uint16). The ids are counted, not sorted
    (np.unique): a third of the time on a full-size map, which every loader worker builds once per item; and a map
    whose ids are 1..K already is only converted, which saves the lookup's pass (1.5 ms on a 640x480 map)."""
    if not labels.size:
        return labels.astype(np.uint16)
    present = np.bincount(labels.ravel().astype(np.intp, copy=False)) > 0
    if present[1:].all():  # already 1..K, as when no mask was hidden: the lookup would be the identity
        return labels.astype(np.uint16)
    present[0] = False
    lookup = (np.cumsum(present) * present).astype(np.uint16)
    return lookup[labels]

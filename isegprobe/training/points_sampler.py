"""RITM's `MultiPointSampler`: pick a training target from an instance label map and simulate its initial clicks.

Follows RITM's behaviour (no object hierarchy, hard targets) with two changes: pixels that are not `valid` (ignore
regions, padding around the image) are never clicked, and objects are selected by their valid area. Randomness comes
from a numpy Generator so a sample can be drawn again exactly from its seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import cv2
import numpy as np

from isegprobe.config import SamplerConfig

_KERNEL = np.ones((3, 3), np.uint8)
_PAD_ROW = (-1, -1, 0)


@dataclass
class SampledTarget:
    mask: np.ndarray  # bool [H, W], the object(s) to segment
    clicks: np.ndarray  # int64 [2 * max_points, 3] of (y, x, is_positive); rows with y = -1 pad


@cache
def geometric_probs(count: int, gamma: float) -> np.ndarray:
    """P(k) proportional to gamma**k for k < count: few clicks are common, many are rare."""
    probs = gamma ** np.arange(count, dtype=np.float64)
    return probs / probs.sum()


class MultiPointSampler:
    def __init__(self, config: SamplerConfig) -> None:
        self.config = config
        self.neg_strategy_probs = np.array(
            [config.negative_bg_prob, config.negative_other_prob, config.negative_border_prob], dtype=np.float64
        )
        if not np.isclose(self.neg_strategy_probs.sum(), 1.0):
            raise ValueError("sampler: negative_bg_prob + negative_other_prob + negative_border_prob must be 1")

    def sample(self, labels: np.ndarray, valid: np.ndarray, rng: np.random.Generator) -> SampledTarget:
        """Target mask and initial clicks for one image: positives first, then negatives, each padded to max_points."""
        config = self.config
        areas = np.bincount(labels[valid].ravel())
        object_ids = [int(obj) for obj in np.flatnonzero(areas[1:] >= max(1, config.min_object_area)) + 1]
        if not object_ids:
            background = valid & (labels == 0)
            target = np.zeros(labels.shape, dtype=bool)
            positives = self._pad([])
            negatives = self._sample_group([[(background, 1.0)]], False, rng)
            return SampledTarget(target, np.array(positives + negatives, dtype=np.int64))

        chosen = self._choose_objects(object_ids, rng)
        object_masks = [labels == obj for obj in chosen]
        target = np.logical_or.reduce(object_masks)
        positive_masks = [self._positive_erode(mask, rng, valid) for mask in object_masks]

        background = ~target
        other = (labels > 0) & ~target if len(object_ids) > len(chosen) else background
        negative_strategy = [
            (mask & valid, prob)
            for mask, prob in zip((background, other, self._border(target)), self.neg_strategy_probs, strict=True)
        ]
        positives = self._sample_group(positive_masks, True, rng)
        negatives = self._sample_group([negative_strategy], False, rng)
        return SampledTarget(target, np.array(positives + negatives, dtype=np.int64))

    def _choose_objects(self, object_ids: list[int], rng: np.random.Generator) -> list[int]:
        config = self.config
        if len(object_ids) > 1 and rng.random() < config.merge_objects_prob:
            most = min(len(object_ids), config.max_merged_objects)
            count = int(rng.integers(2, most + 1))
            return [int(obj) for obj in rng.choice(object_ids, size=count, replace=False)]
        return [int(rng.choice(object_ids))]

    def _sample_group(self, masks: list, positive: bool, rng: np.random.Generator) -> list[tuple[int, int, int]]:
        """RITM's `_multi_mask_sample_points`: with several objects, one click each, then more from their union."""
        max_points = self.config.max_points
        masks = masks[:max_points]
        per_mask = [self._sample_points(mask, not positive, rng) for mask in masks]
        per_mask = [points for points in per_mask if points]
        points: list[tuple[int, int]] = []
        if len(per_mask) == 1:
            points = per_mask[0]
        elif len(per_mask) > 1:
            points = [mask_points[0] for mask_points in per_mask]
            union = []
            for mask in masks:
                if isinstance(mask, list):
                    union.extend((part, prob / len(masks)) for part, prob in mask)
                else:
                    union.append((mask, 1.0 / len(masks)))
            extra = self._sample_points(union, True, rng)
            room = max_points - len(points)
            if len(extra) > room:
                extra = [extra[index] for index in rng.choice(len(extra), size=room, replace=False)]
            points.extend(extra)
        clicks = [(y, x, int(positive)) for y, x in points]
        return self._pad(clicks)

    def _sample_points(
        self, mask: np.ndarray | list[tuple[np.ndarray, float]], is_negative: bool, rng: np.random.Generator
    ) -> list[tuple[int, int]]:
        max_points = self.config.max_points
        gamma = self.config.prob_gamma
        if is_negative:
            count = int(rng.choice(max_points + 1, p=geometric_probs(max_points + 1, gamma)))
        else:
            count = 1 + int(rng.choice(max_points, p=geometric_probs(max_points, gamma)))
        parts = [part for part, _ in mask] if isinstance(mask, list) else [mask]
        probs = np.array([prob for _, prob in mask], dtype=np.float64) if isinstance(mask, list) else np.ones(1)
        probs = probs / probs.sum()
        pools: dict[int, np.ndarray] = {}
        points = []
        for _ in range(count):
            chosen = int(rng.choice(len(parts), p=probs))
            if chosen not in pools:
                # Only the parts the draw picks are scanned: most of a 448 px mask is never a candidate.
                pools[chosen] = np.flatnonzero(parts[chosen])
            pool = pools[chosen]
            if len(pool):
                y, x = divmod(int(pool[int(rng.integers(len(pool)))]), parts[chosen].shape[1])
                points.append((y, x))
        return points

    def _positive_erode(self, mask: np.ndarray, rng: np.random.Generator, valid: np.ndarray) -> np.ndarray:
        """Clicks keep off the object's edge most of the time, unless eroding leaves almost nothing."""
        clickable = mask & valid
        if rng.random() > self.config.positive_erode_prob:
            return clickable
        eroded = cv2.erode(mask.astype(np.uint8), _KERNEL, iterations=self.config.positive_erode_iters).astype(bool)
        eroded &= valid
        return eroded if eroded.sum() > 10 else clickable

    def _border(self, target: np.ndarray) -> np.ndarray:
        """A ring around the target, as wide as expand_ratio * sqrt(area)."""
        radius = int(np.ceil(self.config.expand_ratio * np.sqrt(target.sum())))
        expanded = cv2.dilate(target.astype(np.uint8), _KERNEL, iterations=radius).astype(bool)
        return expanded & ~target

    def _pad(self, clicks: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
        return clicks + [_PAD_ROW] * (self.config.max_points - len(clicks))

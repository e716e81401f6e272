"""RITM's `MultiPointSampler`: pick a training target from an instance label map and simulate its initial clicks.

Follows RITM's behaviour (no object hierarchy, hard targets) with two changes: pixels that are not `valid` (ignore
regions, padding around the image) are never clicked, and objects are selected by their valid area. Randomness comes
from a numpy Generator so a sample can be drawn again exactly from its seed.

The draws are split from the masks they draw from: `choose_target` needs only the objects' areas, and `draw_clicks`
only how many pixels each candidate region (a "part") holds, and says which pixel of which part each click takes.
`MultiPointSampler.sample` makes the parts with NumPy and OpenCV for one image; the batch sampler
(batch_sampler.py) makes them on the device for a whole batch, and both take the same draws from the same seed.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from functools import cache

import cv2
import numpy as np

from isegprobe.config import SamplerConfig
from isegprobe.data.instance_maps import valid_areas

_KERNEL = np.ones((3, 3), np.uint8)
# An eroded object with no more valid pixels than this is not clicked in: its clicks go anywhere on it (RITM).
ERODED_TOO_FEW = 10
_PAD_ROW = (-1, -1, 0)


@dataclass
class SampledTarget:
    mask: np.ndarray  # bool [H, W], the object(s) to segment
    clicks: np.ndarray  # int64 [2 * max_points, 3] of (y, x, is_positive); rows with y = -1 pad


@dataclass(frozen=True)
class TargetChoice:
    """The objects a sample segments, and for each whether its positive clicks keep off its edge (when eroding the
    object leaves more than ERODED_TOO_FEW valid pixels). No objects: the target is empty and only negatives are
    clicked."""

    objects: list[int]
    erode: list[bool]
    others_exist: bool  # some large enough object is not in the target: the "other" negatives are its pixels


@dataclass(frozen=True)
class Pick:
    """A click's pixel: the `index`-th pixel, in row-major order, of part `part`; `positive` as the click is."""

    part: int
    index: int
    positive: bool


@cache
def geometric_cdf(count: int, gamma: float) -> list[float]:
    """Cumulative P(k) for k < count, P(k) proportional to gamma**k: few clicks are common, many are rare."""
    return cumulative(gamma ** np.arange(count, dtype=np.float64))


def cumulative(probs: np.ndarray) -> list[float]:
    """The cumulative sums of probabilities, scaled to end at 1, as `numpy.random.Generator.choice` makes them."""
    cdf = np.asarray(probs, dtype=np.float64).cumsum()
    cdf /= cdf[-1]
    return cdf.tolist()


def categorical(cdf: list[float], rng: np.random.Generator) -> int:
    """`rng.choice(len(cdf), p=probs)` for the probabilities with these cumulative sums: the same index from the same
    single uniform draw (NumPy's choice searches its cdf for it), without choice's checks, a sixth of its time."""
    return bisect.bisect_right(cdf, rng.random())


def border_radius(config: SamplerConfig, target_area: int) -> int:
    """The width of the negative ring around a target of `target_area` pixels: expand_ratio * sqrt(area)."""
    return int(np.ceil(config.expand_ratio * np.sqrt(np.int64(target_area))))


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
        choice = self.choose_target(valid_areas(labels, valid), rng)
        if not choice.objects:
            target = np.zeros(labels.shape, dtype=bool)
            parts = [valid & (labels == 0)]
        else:
            object_masks = [labels == obj for obj in choice.objects]
            target = object_masks[0] if len(object_masks) == 1 else np.logical_or.reduce(object_masks)
            positives = [
                self._positive_part(mask, valid, erode) for mask, erode in zip(object_masks, choice.erode, strict=True)
            ]
            background = ~target
            other = (labels > 0) & ~target if choice.others_exist else background
            border = self._border(target, border_radius(self.config, np.count_nonzero(target)))
            parts = [*positives, *(mask & valid for mask in (background, other, border))]
        picks = self.draw_clicks(choice, [int(np.count_nonzero(part)) for part in parts], rng)
        pools: dict[int, np.ndarray] = {}
        clicks = []
        for pick in picks:
            if pick is None:
                clicks.append(_PAD_ROW)
                continue
            if pick.part not in pools:
                pools[pick.part] = np.flatnonzero(parts[pick.part])
            y, x = divmod(int(pools[pick.part][pick.index]), labels.shape[1])
            clicks.append((y, x, int(pick.positive)))
        return SampledTarget(target, np.array(clicks, dtype=np.int64))

    def choose_target(self, valid_areas: np.ndarray, rng: np.random.Generator) -> TargetChoice:
        """The target's objects from each label's valid area (`valid_areas[label]`, label 0 the background)."""
        config = self.config
        object_ids = [int(obj) for obj in np.flatnonzero(valid_areas[1:] >= max(1, config.min_object_area)) + 1]
        if not object_ids:
            return TargetChoice([], [], False)
        chosen = self._choose_objects(object_ids, rng)
        erode = [rng.random() <= config.positive_erode_prob for _ in chosen]
        return TargetChoice(chosen, erode, len(object_ids) > len(chosen))

    def draw_clicks(self, choice: TargetChoice, part_sizes: list[int], rng: np.random.Generator) -> list[Pick | None]:
        """The clicks' picks, positives then negatives, each padded (None) to max_points.

        The parts are, with objects: each object's positive region, then the negatives' background, other objects
        and border ring; without: the background alone. `part_sizes` counts their pixels.
        """
        if not choice.objects:
            return self._pad([]) + self._sample_group([[(0, 1.0)]], False, part_sizes, rng)
        count = len(choice.objects)
        negatives = [(count + index, float(prob)) for index, prob in enumerate(self.neg_strategy_probs)]
        positives = self._sample_group([[(part, 1.0)] for part in range(count)], True, part_sizes, rng)
        return positives + self._sample_group([negatives], False, part_sizes, rng)

    def _choose_objects(self, object_ids: list[int], rng: np.random.Generator) -> list[int]:
        config = self.config
        if len(object_ids) > 1 and rng.random() < config.merge_objects_prob:
            most = min(len(object_ids), config.max_merged_objects)
            count = int(rng.integers(2, most + 1))
            return [int(obj) for obj in rng.choice(object_ids, size=count, replace=False)]
        return [int(rng.choice(object_ids))]

    def _sample_group(
        self, masks: list[list[tuple[int, float]]], positive: bool, part_sizes: list[int], rng: np.random.Generator
    ) -> list[Pick | None]:
        """RITM's `_multi_mask_sample_points`: with several masks (each a weighted list of parts), one click each,
        then more from their union."""
        max_points = self.config.max_points
        masks = masks[:max_points]
        per_mask = [self._sample_points(mask, not positive, part_sizes, rng) for mask in masks]
        per_mask = [points for points in per_mask if points]
        points: list[tuple[int, int]] = []
        if len(per_mask) == 1:
            points = per_mask[0]
        elif len(per_mask) > 1:
            points = [mask_points[0] for mask_points in per_mask]
            union = [(part, prob / len(masks)) for mask in masks for part, prob in mask]
            extra = self._sample_points(union, True, part_sizes, rng)
            room = max_points - len(points)
            if len(extra) > room:
                extra = [extra[index] for index in rng.choice(len(extra), size=room, replace=False)]
            points.extend(extra)
        return self._pad([Pick(part, index, positive) for part, index in points])

    def _sample_points(
        self, mask: list[tuple[int, float]], is_negative: bool, part_sizes: list[int], rng: np.random.Generator
    ) -> list[tuple[int, int]]:
        """(part, index) of each click drawn from one mask: a click count, then for each click a part by its weight
        and a pixel of it uniformly; a click on an empty part is lost."""
        max_points = self.config.max_points
        gamma = self.config.prob_gamma
        if is_negative:
            count = categorical(geometric_cdf(max_points + 1, gamma), rng)
        else:
            count = 1 + categorical(geometric_cdf(max_points, gamma), rng)
        probs = np.array([prob for _, prob in mask], dtype=np.float64)
        cdf = cumulative(probs / probs.sum())
        points = []
        for _ in range(count):
            part = mask[categorical(cdf, rng)][0]
            if part_sizes[part]:
                points.append((part, int(rng.integers(part_sizes[part]))))
        return points

    def _positive_part(self, mask: np.ndarray, valid: np.ndarray, erode: bool) -> np.ndarray:
        """Clicks keep off the object's edge most of the time, unless eroding leaves almost nothing."""
        clickable = mask & valid
        if not erode:
            return clickable
        eroded = cv2.erode(mask.astype(np.uint8), _KERNEL, iterations=self.config.positive_erode_iters).astype(bool)
        eroded &= valid
        return eroded if np.count_nonzero(eroded) > ERODED_TOO_FEW else clickable

    def _border(self, target: np.ndarray, radius: int) -> np.ndarray:
        """A ring around the target, `radius` pixels wide."""
        expanded = cv2.dilate(target.astype(np.uint8), _KERNEL, iterations=radius).astype(bool)
        return expanded & ~target

    def _pad(self, picks: list[Pick | None]) -> list[Pick | None]:
        return picks + [None] * (self.config.max_points - len(picks))

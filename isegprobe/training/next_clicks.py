"""RITM's iterative training clicks (`get_next_points`): one more click into the larger error region.

The click goes where the error is deepest: the distance transform of the false-negative or false-positive region
(whichever reaches further from its border) picks a random pixel more than half the largest depth inside. Unlike
RITM, pixels that are not valid (ignore, padding) count as neither error.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache

import cv2
import numpy as np
import torch
from torch import Tensor

from isegprobe.devices import from_host
from isegprobe.inference.clicker import Box, bounding_box, box_depth_bound
from isegprobe.training.region_depth import region_depth


def next_click(
    prob: np.ndarray, target: np.ndarray, valid: np.ndarray, rng: np.random.Generator, threshold: float = 0.49
) -> tuple[int, int, int] | None:
    """(y, x, is_positive) for one image, or None when the prediction has no error left."""
    false_negative = target & (prob < threshold) & valid
    false_positive = ~target & (prob > threshold) & valid
    return click_into_errors(false_negative, false_positive, rng)


def click_into_errors(
    false_negative: np.ndarray, false_positive: np.ndarray, rng: np.random.Generator
) -> tuple[int, int, int] | None:
    """`next_click` from the error regions themselves (bool [H, W])."""
    return _draw(deepest_errors(false_negative, false_positive), false_negative.shape[1], rng)


def deepest_errors(false_negative: np.ndarray, false_positive: np.ndarray) -> tuple[np.ndarray, bool]:
    """(flat indices of the pixels deeper than half the largest depth, whether they are false negatives): the
    candidates in row-major order, as np.argwhere lists them, so that the same draw picks the same pixel.

    Only the maximum of the losing region's transform matters, and only to find the winner, so the larger region is
    transformed first and the other only when its depth bound says it could win: in the quickstart's training that
    spares one of the two transforms in more than half of the clicks. The candidates are the same as with both.
    """
    negatives, positives = ErrorRegion(false_negative), ErrorRegion(false_positive)
    first, second = (negatives, positives) if negatives.area >= positives.area else (positives, negatives)
    first_max = first.max_depth
    # Ties go to the false positives (RITM: a click is positive only when the negatives reach strictly further).
    second_max = second.max_depth if second.may_reach(first_max, tie_wins=second is positives) else 0.0
    fn_max, fp_max = (first_max, second_max) if first is negatives else (second_max, first_max)
    is_positive = fn_max > fp_max
    winner = negatives if is_positive else positives
    return winner.deeper_than(max(fn_max, fp_max) / 2.0), is_positive


class ErrorRegion:
    """One error region (bool [H, W]) and its distance transform, made when first asked for.

    Whether the region can reach a depth is first asked of bounds that cost a pass or two over the mask: the
    transform reaches no pixel at more than the number of horizontal and vertical steps (of cost 1) to the border,
    so every pixel fewer than d such steps from one of depth d lies in the region, a diamond of 2d^2 - 2d + 1 pixels
    whose middle row and column are 2d - 1 long.

    The transform covers the region's bounding box (`region_depth`), where it gives the whole image's depths.
    """

    def __init__(self, mask: np.ndarray) -> None:
        self.mask = np.ascontiguousarray(mask)
        self.area = cv2.countNonZero(self.mask.view(np.uint8))
        self._box: Box | None = None
        self._depth: np.ndarray | None = None

    @property
    def box(self) -> Box:
        """(top, left, bottom, right) of the region's pixels, bottom and right exclusive."""
        if self._box is None:
            self._box = bounding_box(self.mask)
        return self._box

    def may_reach(self, level: float, tie_wins: bool) -> bool:
        """Whether the largest depth could be above `level` (or equal to it, where a tie wins)."""
        if self.area == 0:
            return False
        reaches = operator.ge if tie_wins else operator.gt
        by_area = (1 + math.isqrt(2 * self.area - 1)) // 2  # the largest d whose diamond fits in the area
        if not reaches(by_area, level):
            return False
        return reaches(min(by_area, box_depth_bound(self.box)), level)

    @property
    def max_depth(self) -> float:
        return float(self.depth.max()) if self.area else 0.0

    @property
    def depth(self) -> np.ndarray:
        """RITM's transform of the whole image (float32), over the region's bounding box."""
        if self._depth is None:
            self._depth = region_depth(self.mask, self.box)
        return self._depth

    def deeper_than(self, level: float) -> np.ndarray:
        """Flat indices in the image, in row-major order, of the pixels deeper than `level`."""
        if self.area == 0:
            return np.empty(0, dtype=np.intp)
        in_box = np.flatnonzero(self.depth > level)
        top, left, _, right = self.box
        rows, cols = np.divmod(in_box, right - left)
        return (rows + top) * self.mask.shape[1] + (cols + left)


def _draw(deepest: tuple[np.ndarray, bool], width: int, rng: np.random.Generator) -> tuple[int, int, int] | None:
    candidates, is_positive = deepest
    if len(candidates) == 0:
        return None
    y, x = divmod(int(candidates[int(rng.integers(len(candidates)))]), width)
    return y, x, int(is_positive)


@cache
def _transform_threads() -> ThreadPoolExecutor:
    """The threads the batch's transforms share (OpenCV's own count): distanceTransform releases the GIL."""
    return ThreadPoolExecutor(max(1, cv2.getNumThreads()), thread_name_prefix="next-clicks")


def add_next_clicks(
    prob: Tensor,
    target: Tensor,
    valid: Tensor,
    clicks: Tensor,
    slot: int,
    rng: np.random.Generator,
    threshold: float = 0.49,
) -> Tensor:
    """Write each image's next click into row `slot` of clicks [B, K, 3]; prob [B, 1, H, W], target/valid [B, H, W].
    One batch's `next_clicks_together`."""
    return next_clicks_together([ClickRound(prob, *split_valid(target, valid), clicks, slot, rng, threshold)])[0]


def split_valid(target: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """The valid pixels of the target and those of the rest (bool [B, H, W]), where false negatives and false
    positives can be: made once for a batch's rounds of clicks."""
    target, valid = target.bool(), valid.bool()
    return target & valid, ~target & valid


@dataclass(frozen=True)
class ClickRound:
    """A batch to click on after a pass of one probe: its probabilities [B, 1, H, W], the valid pixels of its target
    and of the rest [B, H, W] (`split_valid`), its clicks [B, K, 3] and the row to write, and the generator of that
    probe's draws."""

    prob: Tensor
    valid_object: Tensor
    valid_background: Tensor
    clicks: Tensor
    slot: int
    rng: np.random.Generator
    threshold: float = 0.49


def next_clicks_together(rounds: Sequence[ClickRound]) -> list[Tensor]:
    """Each round's clicks with every image's next click written into row `slot` (a new tensor each); the rounds'
    images are of one size (probes side by side share their batches).

    The error regions are made on the device; all rounds' come to the CPU in one copy, a single wait for a GPU
    whatever the number of probes side by side, and their transforms share the threads. The draws then follow
    round after round, each image in its batch's order from its round's generator: what each probe alone draws.
    """
    first = rounds[0].prob
    errors = first.new_empty((sum(len(round_.prob) for round_ in rounds), 2, *first.shape[-2:]), dtype=torch.bool)
    start = 0
    for round_ in rounds:
        end = start + len(round_.prob)
        prob = round_.prob[:, 0]
        # the false negatives, then the false positives
        torch.logical_and(round_.valid_object, prob < round_.threshold, out=errors[start:end, 0])
        torch.logical_and(round_.valid_background, prob > round_.threshold, out=errors[start:end, 1])
        start = end
    pairs = errors.cpu().numpy()
    rows = torch.cat([round_.clicks[:, round_.slot] for round_ in rounds]).cpu()  # a new tensor: cat copies
    host_rows = rows.split([len(round_.clicks) for round_ in rounds])
    deepest = iter(_transform_threads().map(deepest_errors, pairs[:, 0], pairs[:, 1]))
    clicked = []
    for round_, round_rows in zip(rounds, host_rows, strict=True):
        writable = round_rows.numpy()
        for index in range(len(round_rows)):
            click = _draw(next(deepest), round_.prob.shape[-1], round_.rng)
            if click is not None:
                writable[index] = click
        clicks = round_.clicks.clone()
        clicks[:, round_.slot] = from_host(round_rows, clicks.device)
        clicked.append(clicks)
    return clicked

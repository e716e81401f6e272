"""RITM's click rule for a batch of objects at once, in tensor operations on the evaluation's device.

`Clicker` runs the rule per object with OpenCV on the CPU: on a GPU, every click then brings the batch's masks over
to the host and waits there for the transforms. `TensorClicks` makes the same clicks where the predictions already
are, and only the clicks cross to the host.

Why they are the same clicks:
- OpenCV's precise transform, as `Clicker` calls it (OpenCV's own code), gives an error pixel the correctly rounded
  float32 square root of its squared distance D to the nearest pixel outside the error (checked on every D of a
  2000 x 2000 image). D is an integer, so it is computed here in integers and rounded as OpenCV rounds it: the square
  root in float64, then float32. (PyTorch's float32 square root on a CPU is off by one unit in the last place for a
  fifth of the integers below 2**22.)
- D is the least g(y, x')**2 + (x - x')**2 over the pixel's row, g being each pixel's distance to the nearest pixel
  outside the error in its column: the separation OpenCV's algorithm (Felzenszwalb's) computes it by. A row per pixel
  would cost too much, so D is computed only where the deepest pixel can be. That least value taken over a few
  offsets x' - x only (a geometric ladder), and the distance to the nearest pixel outside the error along the row,
  bound each pixel's D from above; any exact depth computed is one the deepest pixel reaches, so only pixels whose
  bound reaches it (with the float32 rounding allowed for) are candidates. The pixels with the highest bounds are
  computed first, in rounds, to raise that floor before the rest are.
- As in `Clicker`: the deepest pixel is the first in row-major order at the largest float32 depth, clicked pixels
  count as depth 0, a click is positive only when the deepest false negative is strictly deeper than the deepest
  false positive, and without any error left it is negative at (0, 0).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from isegprobe.inference.clicker import Click, iou_from_counts

# Candidate rows whose exact depths are computed at once: this many int64 values (128 MiB), whatever the batch.
_CANDIDATE_VALUES_AT_ONCE = 2**24
# Map pixels transformed at once (about 40 bytes of temporaries each): a batch of large images goes in groups.
_PIXELS_AT_ONCE = 2**25
# Pixels of each map with the highest depth bounds whose exact depths are computed first (then 4x as many a round).
_FIRST_ROUND = 16


def float32_root(squares: Tensor) -> Tensor:
    """The correctly rounded float32 square roots of integer squared distances, as OpenCV's transform gives them."""
    return squares.double().sqrt().float()


def lowest_alike_square(square: Tensor) -> Tensor:
    """The least integer (at least 1) whose float32 root can equal that of `square` (int64). The roots of integers
    a < b round to the same float32 only when b - a <= b / 2**22, so every integer below this one rounds lower."""
    return (square - (square >> 21) - 1).clamp_(min=1)


def deepest_pixels(errors: Tensor, clicked: Tensor) -> tuple[Tensor, Tensor]:
    """For each map of `errors` (bool [M, H, W]): the float32 depth [M] of its deepest pixel not in `clicked` (bool,
    the same shape) and that pixel's flat index [M] in row-major order (the first at that depth); depth 0 and index
    0 where there is none. The map's edge counts as outside the error, as the zero border OpenCV is given does."""
    maps, height, width = errors.shape
    per_group = max(1, _PIXELS_AT_ONCE // (height * width))
    if maps <= per_group:
        return _deepest_pixels(errors, clicked)
    groups = [_deepest_pixels(errors[i : i + per_group], clicked[i : i + per_group]) for i in range(0, maps, per_group)]
    return torch.cat([depths for depths, _ in groups]), torch.cat([pixels for _, pixels in groups])


def _deepest_pixels(errors: Tensor, clicked: Tensor) -> tuple[Tensor, Tensor]:
    maps, height, width = errors.shape
    columns, rows = _distance_along(errors, 1), _distance_along(errors, 2)
    if height * height + width * width >= 2**31:  # squared distances past int32
        columns, rows = columns.long(), rows.long()
    column_squares = columns.square()
    bounds = _depth_bounds(column_squares, rows).masked_fill_(clicked, 0).view(maps, -1)
    candidate_maps, candidate_pixels, squares = _candidates(bounds, column_squares, rows.view(maps, -1))
    depths = float32_root(squares)
    every_map = torch.arange(maps, device=errors.device)
    deepest = torch.zeros(maps, device=errors.device).scatter_reduce_(0, candidate_maps, depths, "amax")
    at_deepest = torch.where(depths == deepest[candidate_maps], candidate_pixels, height * width)
    first = torch.full_like(every_map, height * width).scatter_reduce_(0, candidate_maps, at_deepest, "amin")
    return deepest, torch.where(deepest > 0, first, 0)


def _candidates(bounds: Tensor, column_squares: Tensor, rows: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The maps, flat pixels and exact squared depths of pixels that include every pixel as deep as its map's
    deepest (`bounds` [M, H * W], upper bounds on the squared depths, 0 for pixels that cannot be clicked; the
    bounds of the pixels computed in a round are set to 0 in it, so that no later round takes them again).

    The deepest pixel is at least as deep as any pixel whose exact depth is known, so a pixel whose bound is below
    the lowest square alike to that depth is no candidate. The highest bounds of each map are computed first, in
    rounds of growing size, raising that floor, until the pixels still above it are few enough to compute at once:
    a bound is loose near a pixel outside the error that the offset ladder steps over (the specks a poor probe leaves
    in a large error region), so the pixel with the highest bound may lie shallow, and its depth alone left up to two
    thirds of such a map's pixels to compute a whole row for.
    """
    maps = bounds.shape[0]
    every_map = torch.arange(maps, device=bounds.device)
    found_maps, found_pixels, found_squares = [], [], []
    reached = torch.zeros(maps, dtype=torch.long, device=bounds.device)
    per_map = _FIRST_ROUND
    while True:
        floor = lowest_alike_square(reached)[:, None]
        above = bounds >= floor
        if int(above.sum()) <= per_map * maps:  # otherwise per_map is under a map's pixel count, as topk needs
            round_maps, round_pixels = above.nonzero(as_tuple=True)
            last = True
        else:
            highest = bounds.topk(per_map, dim=1)
            keep = (highest.values >= floor).flatten()
            round_maps = every_map.repeat_interleave(per_map)[keep]
            round_pixels = highest.indices.flatten()[keep]
            last = False
        squares = _exact_squares(column_squares, rows, round_maps, round_pixels)
        found_maps.append(round_maps)
        found_pixels.append(round_pixels)
        found_squares.append(squares)
        if last:
            return torch.cat(found_maps), torch.cat(found_pixels), torch.cat(found_squares)
        reached.scatter_reduce_(0, round_maps, squares, "amax")
        bounds[round_maps, round_pixels] = 0
        per_map *= 4


def _distance_along(errors: Tensor, dim: int) -> Tensor:
    """int32 distance of each pixel of bool [M, H, W] maps to the nearest pixel outside the error on its line along
    `dim` (1: its column, 2: its row), the map's edge counting as outside; 0 outside the error."""
    length = errors.shape[dim]
    shape = [1, 1, 1]
    shape[dim] = length
    index = torch.arange(length, dtype=torch.int32, device=errors.device).view(shape)
    before = torch.where(errors, -1, index).cummax(dim).values
    after = torch.where(errors, length, index).flip(dim).cummin(dim).values.flip(dim)
    return torch.minimum(index - before, after - index)


def _depth_bounds(column_squares: Tensor, rows: Tensor) -> Tensor:
    """Upper bounds on each pixel's squared depth ([M, H, W]): the least column distance squared plus offset
    squared over the offsets of `_ladder_offsets` to either side, and the row distance squared (the map's left and
    right edges). Any set of offsets bounds the exact least; the ladder's nearest offset to the one that gives it is
    within about an eighth of it where the region's edge is smooth, and few pixels besides the deepest keep a bound
    that reaches its depth (blobs of 240 x 320: under 1 % of the error's pixels, against 4020 to 18759 pixels with
    the column and row distances alone). Single pixels left out of a large error region loosen it: 1 to 9 % there."""
    bounds = torch.minimum(column_squares, rows.square())
    for offset in _ladder_offsets(bounds.shape[-1]):
        step = offset * offset
        torch.minimum(bounds[..., offset:], column_squares[..., :-offset] + step, out=bounds[..., offset:])
        torch.minimum(bounds[..., :-offset], column_squares[..., offset:] + step, out=bounds[..., :-offset])
    return bounds


def _ladder_offsets(width: int) -> list[int]:
    """Offsets from 1 up to `width` - 1, each about 1.25 times the one before."""
    offsets: list[int] = []
    offset = 1.0
    while round(offset) < width:
        if not offsets or round(offset) > offsets[-1]:
            offsets.append(round(offset))
        offset *= 1.25
    return offsets


def _exact_squares(column_squares: Tensor, rows: Tensor, maps: Tensor, pixels: Tensor) -> Tensor:
    """The exact squared depth (int64) of the pixels at flat `pixels` of maps `maps`: the least column distance
    squared plus horizontal offset squared over the pixel's row, or the row distance (`rows`, [M, H * W]) squared,
    which counts the map's left and right edges."""
    width = column_squares.shape[-1]
    columns = torch.arange(width, device=column_squares.device)
    per_chunk = max(1, _CANDIDATE_VALUES_AT_ONCE // width)
    squares = []
    for start in range(0, len(pixels), per_chunk):
        chunk_maps, chunk_pixels = maps[start : start + per_chunk], pixels[start : start + per_chunk]
        lines = column_squares[chunk_maps, chunk_pixels // width]
        offsets = (chunk_pixels[:, None] % width - columns).square_()
        squares.append((lines + offsets).amin(1))
    along_rows = rows[maps, pixels].long().square_()
    return torch.minimum(torch.cat(squares), along_rows) if squares else along_rows


class TensorClicks:
    """The clicks and IoUs of a batch of objects, as `Clicker` makes them, computed on the device of the
    predictions. The objects' masks lie in one [N, H, W] tensor, each in its top-left corner, the rest neither
    object nor background: an error never reaches it, so it acts as the edge of that object's image."""

    def __init__(self, gts: Sequence[np.ndarray], ignores: Sequence[np.ndarray], device: torch.device) -> None:
        self.shapes = [tuple(gt.shape) for gt in gts]
        height, width = (max(sizes) for sizes in zip(*self.shapes, strict=True))
        gt, known = np.zeros((len(gts), height, width), bool), np.zeros((len(gts), height, width), bool)
        for index, (mask, ignore) in enumerate(zip(gts, ignores, strict=True)):
            gt[index, : mask.shape[0], : mask.shape[1]] = mask
            known[index, : mask.shape[0], : mask.shape[1]] = ~ignore
        self.object = torch.from_numpy(gt & known).to(device)
        self.background = torch.from_numpy(~gt & known).to(device)
        self.areas = np.count_nonzero(gt & known, axis=(1, 2))
        self.errors = torch.cat((self.object, torch.zeros_like(self.object)))  # of the empty prediction
        self.clicked = torch.zeros_like(self.errors)  # for the false negatives' maps, then the false positives'
        self.clicks: list[list[Click]] = [[] for _ in gts]
        self._error_counts: list[Tensor] = []

    def click(self) -> None:
        """Each object's next click, answering its last prediction observed (the empty one before the first): one
        copy to the host for the batch."""
        count, width = len(self.clicks), self.object.shape[-1]
        depths, pixels = deepest_pixels(self.errors, self.clicked)
        positive = depths[:count] > depths[count:]
        pixel = torch.where(positive, pixels[:count], pixels[count:])
        ys, xs = pixel // width, pixel % width
        self.clicked[torch.arange(2 * count, device=pixel.device), ys.repeat(2), xs.repeat(2)] = True
        answers = torch.stack((ys, xs, positive.long()), 1).cpu().tolist()
        for clicks, (y, x, is_positive) in zip(self.clicks, answers, strict=True):
            clicks.append(Click(y=y, x=x, is_positive=bool(is_positive)))

    def observe(self, masks: Sequence[Tensor]) -> None:
        """The objects' new predictions: bool [H, W] each, at the original size, on the device."""
        predicted = torch.zeros_like(self.object)
        for index, (mask, shape) in enumerate(zip(masks, self.shapes, strict=True)):
            if mask.dtype != torch.bool or tuple(mask.shape) != shape:
                raise ValueError(
                    f"prediction {index} must be a boolean mask of shape {shape} (threshold probabilities first), "
                    f"got {mask.dtype} {tuple(mask.shape)}"
                )
            predicted[index, : shape[0], : shape[1]] = mask
        false_negative, false_positive = self.object & ~predicted, self.background & predicted
        self.errors = torch.cat((false_negative, false_positive))
        self._error_counts.append(self.errors.flatten(1).sum(1).view(2, -1).T)

    def ious(self) -> np.ndarray:
        """float32 [objects, predictions observed]: each prediction's IoU, computed as `ErrorRegions.iou` computes
        it, from counts that cross to the host once."""
        counts = torch.stack(self._error_counts, 1).cpu().numpy()
        return iou_from_counts(self.areas[:, None], counts[..., 0], counts[..., 1]).astype(np.float32)

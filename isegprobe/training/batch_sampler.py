"""RITM's training targets and initial clicks for a whole batch at once, on the batch's device.

`MultiPointSampler.sample` makes one image's candidate regions with NumPy and OpenCV, in the data loader: on a GPU
run without loader workers that is several milliseconds per image of one CPU thread, which the device waits for.
Here the same regions are made for every image of a batch with a few tensor operations on the device. The draws
are `MultiPointSampler`'s own (`choose_target`, `draw_clicks`, from each sample's own seed), and the regions equal
OpenCV's erosion and dilation with its 3x3 kernel (a square of side 2r + 1 for r iterations, pixels outside the image
neither eroding nor dilating), so each sample's target and clicks are the loader's, bit for bit.

The host sees three small arrays per batch: the labels' areas, the regions' pixel counts, and the picks; only they
cross from the device and back.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from isegprobe.config import SamplerConfig
from isegprobe.devices import from_host
from isegprobe.training.points_sampler import ERODED_TOO_FEW, MultiPointSampler, Pick, TargetChoice, border_radius

_PAD_ROW = (-1, -1, 0)


class BatchPointSampler:
    """`MultiPointSampler` for a batch of label maps on one device."""

    def __init__(self, config: SamplerConfig) -> None:
        self.config = config
        self.points = MultiPointSampler(config)

    def sample(self, labels: Tensor, valid: Tensor, seeds: Tensor) -> tuple[Tensor, Tensor]:
        """labels int [B, H, W], valid bool [B, H, W], seeds int64 [B, S] (each sample's numpy seed)
        -> (target bool [B, H, W], clicks long [B, 2 * max_points, 3]), as `MultiPointSampler.sample` gives them."""
        rngs = [np.random.default_rng(row) for row in seeds.tolist()]
        labels = labels.long()
        valid_areas, areas = _label_areas(labels, valid)
        choices = [self.points.choose_target(row, rng) for row, rng in zip(valid_areas, rngs, strict=True)]
        objects = labels[:, None] == _object_ids(choices, labels.device)
        target = objects.any(1)
        radii = [
            border_radius(self.config, int(row[choice.objects].sum()))
            for row, choice in zip(areas, choices, strict=True)
        ]
        regions = torch.cat(
            (
                objects & valid[:, None],
                self._eroded(objects, choices) & valid[:, None],
                _negatives(labels, target, choices, radii) & valid[:, None],
            ),
            dim=1,
        )
        sizes = regions.flatten(2).view(torch.uint8).sum(-1, dtype=torch.int32).cpu().numpy()
        picks = []
        for choice, region_sizes, rng in zip(choices, sizes, rngs, strict=True):
            parts = _part_regions(choice, region_sizes, objects.shape[1])
            picks.append(
                [
                    None if pick is None else (parts[pick.part], pick)
                    for pick in self.points.draw_clicks(choice, [int(region_sizes[part]) for part in parts], rng)
                ]
            )
        return target, _clicks(regions, picks)

    def _eroded(self, objects: Tensor, choices: list[TargetChoice]) -> Tensor:
        """Each object eroded as its positive clicks may need it (OpenCV's erode, positive_erode_iters times)."""
        if not any(any(choice.erode) for choice in choices):
            return torch.zeros_like(objects)
        return ~square_dilation(~objects, self.config.positive_erode_iters)


def _label_areas(labels: Tensor, valid: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Each image's pixel count per label, inside `valid` and in all ([B, L] each, label 0 the background)."""
    batch = labels.shape[0]
    count = int(labels.max()) + 1
    offset = labels + torch.arange(batch, device=labels.device)[:, None, None] * count
    both = torch.stack(
        (
            torch.bincount(offset[valid], minlength=batch * count),
            torch.bincount(offset.flatten(), minlength=batch * count),
        )
    )
    valid_areas, areas = both.view(2, batch, count).cpu().numpy()
    return valid_areas, areas


def _object_ids(choices: list[TargetChoice], device: torch.device) -> Tensor:
    """[B, P, 1, 1] the chosen objects' labels, -1 (no label) where an image has fewer than P."""
    ids = torch.full((len(choices), max(1, *(len(choice.objects) for choice in choices))), -1, dtype=torch.long)
    for row, choice in zip(ids, choices, strict=True):
        row[: len(choice.objects)] = torch.tensor(choice.objects, dtype=torch.long)
    return from_host(ids, device)[:, :, None, None]


def _negatives(labels: Tensor, target: Tensor, choices: list[TargetChoice], radii: list[int]) -> Tensor:
    """[B, 3, H, W]: background, other objects, border ring; without objects only the background, unlabelled."""
    device = labels.device
    no_objects = from_host([not choice.objects for choice in choices], device)[:, None, None]
    others_exist = from_host([choice.others_exist for choice in choices], device)[:, None, None]
    background = ~target & (~no_objects | (labels == 0))
    other = torch.where(others_exist, (labels > 0) & ~target, ~target)
    border = square_dilation(target, from_host(radii, device)) & ~target
    return torch.stack((background, other, border), dim=1)


def _part_regions(choice: TargetChoice, region_sizes: np.ndarray, slots: int) -> list[int]:
    """Which of an image's regions (object j at j, eroded at slots + j, negatives from 2 * slots) is each part of
    `draw_clicks`: an object's eroded region when its coin says erode and more than ERODED_TOO_FEW pixels are
    left."""
    negatives = 2 * slots
    if not choice.objects:
        return [negatives]
    positives = [
        slots + index if erode and region_sizes[slots + index] > ERODED_TOO_FEW else index
        for index, erode in enumerate(choice.erode)
    ]
    return positives + [negatives, negatives + 1, negatives + 2]


def _clicks(regions: Tensor, picks: list[list[tuple[int, Pick] | None]]) -> Tensor:
    """[B, R, 3] clicks: each pick's pixel, the index-th of its region in row-major order, found by a cumulative
    count of the regions that are picked from."""
    batch, _, _, width = regions.shape
    rows = len(picks[0])
    pair_of: dict[tuple[int, int], int] = {}
    ranks: list[list[int]] = []
    where = np.full((batch, rows, 2), -1, dtype=np.int64)
    positive = np.zeros((batch, rows), dtype=np.int64)
    for image, image_picks in enumerate(picks):
        for row, entry in enumerate(image_picks):
            if entry is None:
                continue
            region, pick = entry
            pair = pair_of.setdefault((image, region), len(pair_of))
            if pair == len(ranks):
                ranks.append([])
            where[image, row] = (pair, len(ranks[pair]))
            ranks[pair].append(pick.index + 1)
            positive[image, row] = int(pick.positive)
    clicks = torch.tensor(_PAD_ROW, dtype=torch.long).repeat(batch, rows, 1)
    if not pair_of:
        return from_host(clicks, regions.device)
    device = regions.device
    images, region_ids = (from_host(values, device) for values in zip(*pair_of, strict=True))
    counts = regions[images, region_ids].flatten(1).cumsum(1, dtype=torch.int32)
    longest = max(len(wanted) for wanted in ranks)
    padded = torch.tensor([wanted + [1] * (longest - len(wanted)) for wanted in ranks], dtype=torch.int32)
    flat = torch.searchsorted(counts, from_host(padded, device)).view(-1)
    where = from_host(where, device)
    picked = where[..., 0] >= 0
    index = flat[(where[..., 0] * longest + where[..., 1]).clamp(min=0)]
    found = torch.stack((index // width, index % width, from_host(positive, device)), dim=-1)
    return torch.where(picked[..., None], found, from_host(clicks, device))


def square_dilation(masks: Tensor, radius: int | Tensor) -> Tensor:
    """Binary dilation of masks [B, ..., H, W] by a square of side 2r + 1 (r per image with radius [B]): OpenCV's
    dilate with a 3x3 kernel and r iterations, where pixels outside the image are not in the mask. Separable: a
    pixel is in it when a mask pixel lies within r along its row after the same along the columns."""
    if isinstance(radius, Tensor):
        radius = radius.view(-1, *([1] * (masks.dim() - 1)))
    return _within(_within(masks, radius, -1), radius, -2)


def _within(masks: Tensor, radius: int | Tensor, dim: int) -> Tensor:
    """Pixels with a mask pixel at most `radius` away along `dim`: the mask's running count differs across the
    window from position - radius to position + radius (clipped to the image)."""
    length = masks.shape[dim]
    counts = masks.cumsum(dim, dtype=torch.int32)
    counts = torch.cat((torch.zeros_like(counts.narrow(dim, 0, 1)), counts), dim)
    shape = [1] * masks.dim()
    shape[dim] = length
    positions = torch.arange(length, device=masks.device).view(shape)
    upper = (positions + radius).clamp(max=length - 1) + 1
    lower = (positions - radius).clamp(min=0)
    size = list(masks.shape)
    return counts.gather(dim, upper.expand(size)) > counts.gather(dim, lower.expand(size))

"""Clicks as the probe sees them: binary disks at the working resolution, RITM's `DistMaps(use_disks=True)`.

A batch of clicks is a tensor [B, K, 3] of (y, x, is_positive) in working-resolution pixels; rows with both y < 0
and x < 0 are padding (RITM's rule), so images with different numbers of clicks share one tensor, and a click just
outside a zoom-in crop still stamps the part of its disk that falls inside. Centres need not be whole pixels (a click
mapped into a crop rarely is): a pixel is in the disk when its squared float32 distance to the centre is at most
radius**2, as RITM computes it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any, NamedTuple

import torch
from torch import Tensor

from isegprobe.devices import from_host

PADDING_ROW = (-1.0, -1.0, 0.0)

# The research code (iSegProbe, after RITM) stacks its click input as [previous mask, positive, negative], isegprobe
# as [positive, negative, previous mask]: its channel j is isegprobe's channel RESEARCH_CLICK_CHANNELS[j], and
# isegprobe's channel k is its channel RESEARCH_CHANNEL_OF[k].
RESEARCH_CLICK_CHANNELS = (2, 0, 1)
RESEARCH_CHANNEL_OF = tuple(RESEARCH_CLICK_CHANNELS.index(channel) for channel in range(3))


def disk_offsets(radius: int, device: torch.device | str | None = None) -> Tensor:
    """(dy, dx) of every pixel within `radius` of a click on a whole pixel (squared distance <= radius**2, as RITM),
    on `device`. The tensor is made once per radius and device and shared: read it, never write into it."""
    return _disk_offsets(radius, torch.device(device if device is not None else "cpu"))


@lru_cache(maxsize=16)
def _disk_offsets(radius: int, device: torch.device) -> Tensor:
    """Kept on the device, since a copy from the host to a GPU first waits for every kernel queued there, and every
    pass of a probe stamps its clicks."""
    span = torch.arange(-radius, radius + 1)
    dy, dx = torch.meshgrid(span, span, indexing="ij")
    inside = dy * dy + dx * dx <= radius * radius
    return torch.stack((dy[inside], dx[inside]), dim=1).to(device)


@lru_cache(maxsize=16)
def _window_offsets(radius: int, device: torch.device) -> Tensor:
    """(dy, dx) of the (2r + 2)^2 window around a click between pixels, kept on the device as `_disk_offsets`."""
    span = torch.arange(-radius, radius + 2)
    dy, dx = torch.meshgrid(span, span, indexing="ij")
    return torch.stack((dy.reshape(-1), dx.reshape(-1)), dim=1).to(device)


def as_click_tensor(clicks: Tensor | Sequence[Iterable[Any]], device: torch.device | str | None = None) -> Tensor:
    """A [B, K, 3] tensor from a tensor or from per-image lists of (y, x, is_positive) tuples or Click objects; lists
    become float32, so that centres between pixels stay where they are. Clicks from the host reach the device
    without a wait for it (`from_host`)."""
    if isinstance(clicks, Tensor):
        if clicks.ndim != 3 or clicks.shape[-1] != 3:
            raise ValueError(f"clicks must be [B, K, 3] (y, x, is_positive), got {tuple(clicks.shape)}")
        return from_host(clicks, device)
    rows = [[_click_row(click) for click in image_clicks] for image_clicks in clicks]
    width = max((len(image_rows) for image_rows in rows), default=0)
    padded = [image_rows + [PADDING_ROW] * (width - len(image_rows)) for image_rows in rows]
    return from_host(torch.tensor(padded, dtype=torch.float32).reshape(len(rows), width, 3), device)


def _click_row(click: Any) -> tuple[float, float, float]:
    if hasattr(click, "is_positive"):
        return float(click.y), float(click.x), float(bool(click.is_positive))
    y, x, is_positive = click
    return float(y), float(x), float(bool(is_positive))


def click_maps(clicks: Tensor, size: tuple[int, int], radius: int = 5) -> Tensor:
    """Positive and negative disk maps [B, 2, H, W] (float32, 0/1).

    Each click tests only the (2r + 2)^2 window of pixels that can lie within `radius` of its centre, rather than a
    distance map per click, so the cost is B*K*window pixels instead of B*K*H*W.
    """
    height, width = size
    batch = clicks.shape[0]
    buffer = torch.zeros(batch * 2 * height * width + 1, device=clicks.device)  # one spare element: see _stamp
    maps = buffer[:-1].view(batch, 2, height, width)
    _stamp_disks(buffer, maps.shape, clicks, radius)
    return maps


def _stamp_disks(
    buffer: Tensor, shape: torch.Size, clicks: Tensor, radius: int, positive: int = 0, negative: int = 1
) -> None:
    """Stamp every click's disk into channel `positive` or `negative` of the maps that `buffer` holds."""
    if clicks.shape[1] == 0:
        return
    centres = clicks[..., None, :2]
    if clicks.is_floating_point():
        cells, inside = _disk_cells(centres.float(), radius)
    else:
        cells, inside = centres + disk_offsets(radius, clicks.device), None
    _stamp(buffer, shape, clicks, centres, cells, inside, positive, negative)


def _disk_cells(centres: Tensor, radius: int) -> tuple[Tensor, Tensor]:
    """(cells [B, K, window, 2], inside [B, K, window]) of clicks centred between pixels: the (y, x) of the window's
    pixels around each centre, and whether each lies within `radius` of it (RITM's float32 squared distance)."""
    cells = centres.floor().long() + _window_offsets(radius, centres.device)
    apart = cells.float() - centres
    squared = apart * apart
    return cells, squared[..., 0] + squared[..., 1] <= float(radius * radius)


def _stamp(
    buffer: Tensor,
    shape: torch.Size,
    clicks: Tensor,
    centres: Tensor,
    cells: Tensor,
    inside: Tensor | None,
    positive: int,
    negative: int,
) -> None:
    """Set maps[b, channel of the click, y, x] = 1 for every (y, x) of `cells` [B, K, D, 2] inside the image and,
    where given, `inside`, the maps of `shape` being all of `buffer` but its last element. A padding click (both
    coordinates of its centre [B, K, 1, 2] negative) stamps nothing.

    The pixels left out are pointed at that spare element rather than selected with a boolean mask, so that a GPU
    need not report how many there are (a wait for the device at every forward). The indices take about twenty
    operators, each a kernel launch on a GPU, whatever the number of clicks.
    """
    geometry = _geometry(tuple(shape), positive, negative, clicks.device)
    keep = ((cells >= 0) & (cells < geometry.size)).all(-1)
    keep &= (centres >= 0).any(-1)
    if inside is not None:
        keep &= inside
    plane = torch.where(clicks[..., 2] > 0, geometry.positive_planes, geometry.negative_planes)
    flat = plane[..., None] + (cells * geometry.strides).sum(-1)
    buffer.index_fill_(0, torch.where(keep, flat, buffer.numel() - 1).flatten(), 1.0)


class _Geometry(NamedTuple):
    size: Tensor  # (H, W)
    strides: Tensor  # (W, 1): a pixel's offset in its map
    positive_planes: Tensor  # [B, 1]: the offset of each image's positive map in the buffer
    negative_planes: Tensor  # [B, 1]: and of its negative map


@lru_cache(maxsize=16)
def _geometry(shape: tuple[int, ...], positive: int, negative: int, device: torch.device) -> _Geometry:
    """Kept on the device, as `_disk_offsets`: every pass of a probe stamps its clicks into maps of one shape."""
    batch, channels, height, width = shape
    images = torch.arange(batch)[:, None] * channels
    return _Geometry(
        size=torch.tensor([height, width], device=device),
        strides=torch.tensor([width, 1], device=device),
        positive_planes=((images + positive) * height * width).to(device),
        negative_planes=((images + negative) * height * width).to(device),
    )


def click_inputs(clicks: Tensor, prev_mask: Tensor, radius: int = 5, research_order: bool = False) -> Tensor:
    """The probe's 3-channel click input [B, 3, H, W]: positive disks, negative disks, previous mask (float32);
    with `research_order`, in the research code's order (`RESEARCH_CLICK_CHANNELS`).

    The disks are stamped and the mask copied into one buffer, rather than concatenated: a step makes this input
    for every pass of the probe, at full resolution."""
    batch, _, height, width = prev_mask.shape
    buffer = torch.empty(batch * 3 * height * width + 1, device=prev_mask.device)  # one spare element: see _stamp
    inputs = buffer[:-1].view(batch, 3, height, width)
    positive, negative, previous = RESEARCH_CHANNEL_OF if research_order else (0, 1, 2)
    inputs[:, positive].zero_()
    inputs[:, negative].zero_()
    inputs[:, previous].copy_(prev_mask[:, 0])
    _stamp_disks(buffer, inputs.shape, from_host(clicks, prev_mask.device), radius, positive, negative)
    return inputs


def in_click_channel_order(tensor: Tensor, dim: int, order: Sequence[int]) -> Tensor:
    """`tensor` with the click channels it holds along `dim` (3 of them, or runs of 3 with the channel innermost,
    as in a flattened (p1 p2 c) patch) taken in `order`: channel j of the result is channel order[j] of `tensor`."""
    index = torch.arange(tensor.shape[dim], device=tensor.device).reshape(-1, 3)[:, list(order)].reshape(-1)
    return tensor.index_select(dim, index)

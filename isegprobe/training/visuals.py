"""Prediction pictures for the training log: ground truth beside prediction, with the clicks drawn."""

from __future__ import annotations

import torch
from torch import Tensor

from isegprobe.model.clicks import click_maps

_GREEN = torch.tensor([0.1, 0.9, 0.2]).view(3, 1, 1)
_RED = torch.tensor([0.95, 0.1, 0.1]).view(3, 1, 1)
_BLUE = torch.tensor([0.1, 0.4, 1.0]).view(3, 1, 1)


def prediction_panels(images: Tensor, target: Tensor, prob: Tensor, clicks: Tensor, count: int = 4) -> Tensor:
    """[N, 3, H, 2W] floats in [0, 1]: image with the target tinted | image with the prediction and clicks.

    images uint8 [B, 3, H, W], target bool [B, H, W], prob [B, 1, H, W], clicks [B, K, 3].
    """
    count = min(count, images.shape[0])
    base = images[:count].detach().float().cpu() / 255.0
    truth = target[:count].detach().cpu().float()[:, None]
    predicted = (prob[:count].detach().cpu().float() > 0.5).float()
    disks = click_maps(clicks[:count].detach().cpu(), tuple(images.shape[-2:]), radius=3)
    left = _tint(base, truth, _GREEN)
    right = _tint(base, predicted, _BLUE)
    right = _paint(right, disks[:, :1], _GREEN)
    right = _paint(right, disks[:, 1:], _RED)
    return torch.cat((left, right), dim=-1)


def _tint(images: Tensor, mask: Tensor, colour: Tensor) -> Tensor:
    return images * (1 - 0.5 * mask) + colour * 0.5 * mask


def _paint(images: Tensor, mask: Tensor, colour: Tensor) -> Tensor:
    return images * (1 - mask) + colour * mask

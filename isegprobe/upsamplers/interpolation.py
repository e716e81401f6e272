"""The baselines every learned upsampler must beat: fixed interpolation (nearest, bilinear, bicubic) of each
channel to the guidance image's grid, as iSegProbe offers them."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from isegprobe.errors import UserError
from isegprobe.upsamplers.base import Upsampler
from isegprobe.upsamplers.registry import register_upsampler

MODES = ("nearest", "bilinear", "bicubic")


class InterpolationUpsampler(Upsampler):
    """`F.interpolate` to the guidance size. Bilinear follows the probe's `align_corners`; bicubic aligns pixel
    centres and nearest copies the nearest token, as iSegProbe's do, so imported probes see the same features."""

    commutes_with_channel_mixing = True

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode

    def forward(self, features: Tensor, guidance: Tensor) -> Tensor:
        size = guidance.shape[-2:]
        if self.mode == "nearest":
            return F.interpolate(features, size=size, mode="nearest")
        align_corners = self.align_corners if self.mode == "bilinear" else False
        return F.interpolate(features, size=size, mode=self.mode, align_corners=align_corners)


def _register(mode: str) -> None:
    @register_upsampler(mode)
    def create(dim: int, weights: str | None = None) -> InterpolationUpsampler:
        if weights is not None:
            raise UserError(f"upsampler {mode!r} takes no weights")
        return InterpolationUpsampler(mode)


for _mode in MODES:
    _register(_mode)

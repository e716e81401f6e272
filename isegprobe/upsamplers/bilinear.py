"""The baseline every learned upsampler must beat: bilinear interpolation to the guidance image's size."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from isegprobe.errors import UserError
from isegprobe.upsamplers.base import Upsampler
from isegprobe.upsamplers.registry import register_upsampler


class BilinearUpsampler(Upsampler):
    commutes_with_channel_mixing = True

    def forward(self, features: Tensor, guidance: Tensor) -> Tensor:
        return F.interpolate(features, size=guidance.shape[-2:], mode="bilinear", align_corners=self.align_corners)


@register_upsampler("bilinear")
def create_bilinear(dim: int, weights: str | None = None) -> BilinearUpsampler:
    if weights is not None:
        raise UserError("upsampler 'bilinear' takes no weights")
    return BilinearUpsampler()

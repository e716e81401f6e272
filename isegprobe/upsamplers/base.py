"""The one interface every feature upsampler implements, so the probe can swap them by name."""

from __future__ import annotations

from torch import Tensor, nn


class Upsampler(nn.Module):
    """Maps low-resolution features [B, C, h, w] to [B, C, H', W'], guided by the normalized image [B, 3, H, W].

    `trainable` says whether the method has weights a probe may fine-tune; the probe's config decides whether it does.
    `commutes_with_channel_mixing` is True when each channel is upsampled on its own and linearly (bilinear,
    identity): a 1x1 conv then gives the same result before upsampling as after, at a fraction of the cost.
    `align_corners` is the geometry of a bilinear resize to the guidance grid (the probe sets it from its config):
    False aligns pixel centres, True the corner pixels.
    """

    trainable: bool = False
    commutes_with_channel_mixing: bool = False
    align_corners: bool = False

    def forward(self, features: Tensor, guidance: Tensor) -> Tensor:
        raise NotImplementedError

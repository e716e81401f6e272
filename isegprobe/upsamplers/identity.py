"""No upsampling: the head runs on the feature grid and only its logits are resized to the image."""

from __future__ import annotations

from torch import Tensor

from isegprobe.errors import UserError
from isegprobe.upsamplers.base import Upsampler
from isegprobe.upsamplers.registry import register_upsampler


class IdentityUpsampler(Upsampler):
    commutes_with_channel_mixing = True

    def forward(self, features: Tensor, guidance: Tensor) -> Tensor:
        return features


@register_upsampler("identity")
def create_identity(dim: int, weights: str | None = None) -> IdentityUpsampler:
    if weights is not None:
        raise UserError("upsampler 'identity' takes no weights")
    return IdentityUpsampler()

"""Layers several upsamplers share, with their authors' parameter names so published checkpoints load unchanged."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ChannelNorm(nn.Module):
    """LayerNorm over the channels of a [B, C, H, W] map: FeatUp's and LoftUp's `ChannelNorm` (parameters `norm.*`)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class MultiheadProjections(nn.Module):
    """The weights of `nn.MultiheadAttention` under its own names (`in_proj_weight`, `in_proj_bias`, `out_proj`).

    LoftUp and AnyUp publish checkpoints of `nn.MultiheadAttention`; holding its weights without its forward lets
    them compute attention in query chunks (and AnyUp use the head-averaged weights alone) with the same parameters.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attention width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(nn.init.xavier_uniform_(torch.empty(3 * dim, dim)))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.zeros_(self.out_proj.bias)

    def heads(self, x: Tensor, which: int) -> Tensor:
        """Project [B, N, E] tokens with the query (0), key (1) or value (2) weights and split them: [B, h, N, E/h]."""
        width = self.in_proj_weight.shape[1]
        rows = slice(which * width, (which + 1) * width)
        projected = F.linear(x, self.in_proj_weight[rows], self.in_proj_bias[rows])
        return projected.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)

    def merge(self, heads: Tensor) -> Tensor:
        """[B, h, N, E/h] -> [B, N, E] through the output projection."""
        return self.out_proj(heads.transpose(1, 2).flatten(2))


def resize_to(features: Tensor, size: tuple[int, int], align_corners: bool = False) -> Tensor:
    """Bilinear resize of [B, C, h, w] to `size` (a fixed-factor method's native grid to the guidance image, logits
    to the image); pixel centres aligned unless `align_corners`. A no-op at the right size."""
    if tuple(features.shape[-2:]) == tuple(size):
        return features
    return F.interpolate(features, size=size, mode="bilinear", align_corners=align_corners)

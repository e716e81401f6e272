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

    LoftUp, AnyUp and JAFAR publish checkpoints of `nn.MultiheadAttention`; holding its weights without its forward
    lets them compute attention in query chunks (and AnyUp and JAFAR use the head-averaged weights alone) with the
    same parameters. With values of another width (`value_dim`, JAFAR's `vdim`) the three projections are separate
    (`q_proj_weight`, `k_proj_weight`, `v_proj_weight`), as `nn.MultiheadAttention` lays them out then.
    """

    def __init__(self, dim: int, num_heads: int, value_dim: int | None = None) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attention width {dim} is not divisible by {num_heads} heads")
        self.dim = dim
        self.num_heads = num_heads
        self.packed = value_dim is None or value_dim == dim
        if self.packed:
            self.in_proj_weight = nn.Parameter(nn.init.xavier_uniform_(torch.empty(3 * dim, dim)))
        else:
            self.q_proj_weight = nn.Parameter(nn.init.xavier_uniform_(torch.empty(dim, dim)))
            self.k_proj_weight = nn.Parameter(nn.init.xavier_uniform_(torch.empty(dim, dim)))
            self.v_proj_weight = nn.Parameter(nn.init.xavier_uniform_(torch.empty(dim, value_dim)))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.zeros_(self.out_proj.bias)

    def heads(self, x: Tensor, which: int, sequence_first: bool = False) -> Tensor:
        """Project [B, N, D] tokens with the query (0), key (1) or value (2) weights and split them: [B, h, N, E/h].

        `sequence_first` projects them as `nn.MultiheadAttention` does its [N, B, D] inputs (a view of these): on a
        CPU a linear layer over such a strided input takes another path (with frozen weights, the bias added after
        the product instead of within it) and rounds otherwise."""
        rows = slice(which * self.dim, (which + 1) * self.dim)
        if self.packed:
            weight = self.in_proj_weight[rows]
        else:
            weight = (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight)[which]
        if sequence_first:
            projected = F.linear(x.transpose(0, 1), weight, self.in_proj_bias[rows]).transpose(0, 1)
        else:
            projected = F.linear(x, weight, self.in_proj_bias[rows])
        return projected.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)

    def merge(self, heads: Tensor) -> Tensor:
        """[B, h, N, E/h] -> [B, N, E] through the output projection."""
        return self.out_proj(heads.transpose(1, 2).flatten(2))


class RoPE(nn.Module):
    """2D rotary encoding of [B, N, C] tokens: the first half of the channels rotate with y, the second with x.

    JAFAR's and AnyUp's (which took it from JAFAR): the frequencies are a parameter, `freqs` [2, C], so they are in
    the authors' files.
    """

    def __init__(self, dim: int, theta: float = 100) -> None:
        super().__init__()
        rates = theta ** torch.linspace(0, -1, dim // 4)
        rates = torch.cat([rates, rates])
        freqs = torch.zeros(2, dim)
        freqs[0, : dim // 2] = rates
        freqs[1, -dim // 2 :] = rates
        self.freqs = nn.Parameter(freqs * 2 * torch.pi)

    def forward(self, tokens: Tensor, height: int, width: int) -> Tensor:
        grid_y = torch.linspace(0, 1, height, device=tokens.device, dtype=tokens.dtype)
        grid_x = torch.linspace(0, 1, width, device=tokens.device, dtype=tokens.dtype)
        coords = torch.stack(torch.meshgrid(grid_y, grid_x, indexing="ij"), dim=-1).reshape(1, height * width, 2)
        angle = coords @ self.freqs
        first, second = tokens.chunk(2, dim=-1)
        return tokens * angle.cos() + torch.cat([-second, first], dim=-1) * angle.sin()


def resize_to(features: Tensor, size: tuple[int, int], align_corners: bool = False) -> Tensor:
    """Bilinear resize of [B, C, h, w] to `size` (a fixed-factor method's native grid to the guidance image, logits
    to the image); pixel centres aligned unless `align_corners`. A no-op at the right size."""
    if tuple(features.shape[-2:]) == tuple(size):
        return features
    return F.interpolate(features, size=size, mode="bilinear", align_corners=align_corners)

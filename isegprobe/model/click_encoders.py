"""Click encoders: the 3-channel click input [B, 3, H, W] -> click tokens [B, dim, h, w] on a given grid.

`patch_embed` is SimpleClick's: one conv with kernel = stride = patch size. `simple_vit` lets clicks see each other
before fusion. `conv` keeps full resolution, for fusing after the upsampler.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from isegprobe.config import ClickEncoderConfig
from isegprobe.errors import UserError

CLICK_CHANNELS = 3


class PatchClickEncoder(nn.Module):
    def __init__(self, dim: int, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(CLICK_CHANNELS, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, click_input: Tensor, grid: tuple[int, int]) -> Tensor:
        return _to_grid(self.proj(click_input), grid)


def sincos_positions(height: int, width: int, dim: int) -> Tensor:
    """Fixed 2-D sin-cos positions [height*width, dim] (MAE's layout: half the channels for y, half for x)."""
    quarter = dim // 4
    omega = 1.0 / (10000 ** (torch.arange(quarter, dtype=torch.float32) / quarter))
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32), indexing="ij"
    )
    y_angles = ys.reshape(-1, 1) * omega
    x_angles = xs.reshape(-1, 1) * omega
    return torch.cat((y_angles.sin(), y_angles.cos(), x_angles.sin(), x_angles.cos()), dim=1)


class SimpleViTClickEncoder(nn.Module):
    """A small pre-norm ViT (lucidrains' SimpleViT shape: fixed sin-cos positions, no class token) over click maps."""

    def __init__(self, dim: int, patch_size: int, depth: int = 6, heads: int = 8, mlp_dim: int = 2048) -> None:
        super().__init__()
        if dim % 4 or dim % heads:
            raise UserError(f"click encoder simple_vit: dim {dim} must be divisible by 4 and by heads={heads}")
        self.dim = dim
        self.proj = nn.Conv2d(CLICK_CHANNELS, dim, kernel_size=patch_size, stride=patch_size)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(
                dim, heads, dim_feedforward=mlp_dim, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, click_input: Tensor, grid: tuple[int, int]) -> Tensor:
        patches = self.proj(click_input)
        batch, dim, height, width = patches.shape
        positions = sincos_positions(height, width, dim).to(device=patches.device, dtype=patches.dtype)
        tokens = patches.flatten(2).transpose(1, 2) + positions
        for block in self.blocks:
            tokens = block(tokens)
        tokens = self.norm(tokens)
        return _to_grid(tokens.transpose(1, 2).reshape(batch, dim, height, width), grid)


class ConvClickEncoder(nn.Module):
    """Two 3x3 convs applied on the target grid itself, so thin disks survive at high resolution."""

    def __init__(self, dim: int, hidden: int = 32) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(CLICK_CHANNELS, hidden, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, dim, kernel_size=3, padding=1),
        )

    def forward(self, click_input: Tensor, grid: tuple[int, int]) -> Tensor:
        if tuple(click_input.shape[-2:]) != tuple(grid):
            click_input = F.adaptive_max_pool2d(click_input, grid)
        return self.layers(click_input)


def _to_grid(tokens: Tensor, grid: tuple[int, int]) -> Tensor:
    if tuple(tokens.shape[-2:]) == tuple(grid):
        return tokens
    return F.interpolate(tokens, size=grid, mode="bilinear", align_corners=False)


PATCH_ENCODERS = ("patch_embed", "simple_vit")
CLICK_ENCODERS = (*PATCH_ENCODERS, "conv")


def create_click_encoder(config: ClickEncoderConfig, dim: int, patch_size: int) -> nn.Module:
    if config.name == "patch_embed":
        return PatchClickEncoder(dim, patch_size)
    if config.name == "simple_vit":
        return SimpleViTClickEncoder(dim, patch_size, config.depth, config.heads, config.mlp_dim)
    if config.name == "conv":
        return ConvClickEncoder(dim)
    raise UserError(f"model.click_encoder.name: unknown {config.name!r}; known: {', '.join(CLICK_ENCODERS)}")

"""LiFT (Suri et al., ECCV 2024): one learned 2x step that fuses the ViT features with a small strided image branch.

Parameter names follow the authors' `LiFT` module, so their `torch.save(lift.state_dict())` files load strictly
(`lift_dino_vits16.pth`, the DINOv2 S/14 `lift.pth` iSegProbe publishes; DDP's `module.` prefix is dropped).
The image branch is pooled to twice the feature grid with an adaptive max pool, as in the DINOv2 S/14 release; for the
original patch-8 (identity) and patch-16 (2x2 max pool) models at their training sizes that is the same operation.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from isegprobe.state_dicts import load_strictly, read_state_dict
from isegprobe.upsamplers.layers import resize_to
from isegprobe.upsamplers.learned import LearnedUpsampler, with_weights
from isegprobe.upsamplers.registry import register_upsampler

IMAGE_CHANNELS = 32


def conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1, bias: bool = True) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, stride=stride, bias=bias),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


class DoubleConv(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.double_conv = nn.Sequential(
            *conv_bn_relu(in_channels, out_channels, bias=False), *conv_bn_relu(out_channels, out_channels, bias=False)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.double_conv(x)


class Up(nn.Module):
    """Transposed-conv 2x step, then a double conv over the result and the image branch at that grid."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, in_channels // 2, kernel_size=2, stride=2)
        self.conv_1 = DoubleConv(in_channels // 2 + IMAGE_CHANNELS, out_channels // 2)

    def forward(self, x: Tensor, image_features: Tensor) -> Tensor:
        return self.conv_1(torch.cat([self.up(x), image_features], dim=1))


class LiFT(LearnedUpsampler):
    scale = 2
    guidance_statistics = "imagenet"  # the DINO and DINOv2 checkpoints (the authors', iSegProbe's) learnt so

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.up1 = Up(dim + IMAGE_CHANNELS, dim)
        self.outc = nn.Conv2d(dim // 2, dim, kernel_size=1)
        self.image_convs_1 = nn.Sequential(
            *conv_bn_relu(3, IMAGE_CHANNELS, stride=2), *conv_bn_relu(IMAGE_CHANNELS, IMAGE_CHANNELS, stride=2)
        )
        self.image_convs_2 = nn.Sequential(*conv_bn_relu(IMAGE_CHANNELS, IMAGE_CHANNELS, stride=2))

    def forward_native(self, features: Tensor, guidance: Tensor) -> Tensor:
        """The authors' output: [B, C, 2h, 2w]."""
        height, width = features.shape[-2:]
        image_2x = F.adaptive_max_pool2d(self.image_convs_1(guidance), (2 * height, 2 * width))
        fused = torch.cat([features, self.image_convs_2(image_2x)], dim=1)
        return self.outc(self.up1(fused, image_2x))

    def forward(self, features: Tensor, guidance: Tensor) -> Tensor:
        return resize_to(self.forward_native(features, guidance), guidance.shape[-2:], self.align_corners)

    def load_checkpoint(self, path: Path) -> None:
        load_strictly(self, read_state_dict(path), f"{path} is not a LiFT checkpoint for this feature dim")


@register_upsampler("lift")
def create_lift(dim: int, weights: str | None = None) -> LiFT:
    return with_weights(LiFT(dim), weights)

"""The segmentation head: features at the upsampled grid -> one logit per pixel."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class SegmentationHead(nn.Module):
    """iSegProbe's head (its `ConvSegHead`): two 3x3 conv + ReLU at the feature dim, then a 1x1 conv to one logit.

    At full resolution those C -> C convs dominate a cached step (benchmarks/train_throughput.py times each part of
    one), so `width` optionally reduces C with a 1x1 conv first and runs the 3x3 convs at that width.
    """

    def __init__(self, dim: int, width: int | None = None) -> None:
        super().__init__()
        inner = dim if width is None else width
        self.reduce = nn.Identity() if width is None else nn.Conv2d(dim, width, kernel_size=1)
        self.body = nn.Sequential(
            _conv_before_relu(inner),
            nn.ReLU(inplace=True),
            _conv_before_relu(inner),
            nn.ReLU(inplace=True),
        )
        self.logit = nn.Conv2d(inner, 1, kernel_size=1)

    def decode(self, reduced: Tensor) -> Tensor:
        """The head after its 1x1 reduction, for a probe that reduces before a channel-wise upsampler."""
        return self.logit(self.body(reduced))

    def forward(self, features: Tensor) -> Tensor:
        return self.decode(self.reduce(features))

    def in_channel_order(self, features: Tensor, order: Tensor) -> Tensor:
        """The same function, reading the channels of `features` in `order` (channel j of what its first layer reads
        is channel order[j]) and its first layer's weights alike: every sum over the channels then runs in that order.
        The gathered features are laid out channels-last, as the research code's featurizers hand theirs over."""
        first = "body.0.weight" if isinstance(self.reduce, nn.Identity) else "reduce.weight"
        gathered = features.permute(0, 2, 3, 1).index_select(3, order).permute(0, 3, 1, 2)
        weight = self.get_parameter(first).index_select(1, order)
        return torch.func.functional_call(self, {first: weight}, (gathered,))


def _conv_before_relu(channels: int) -> nn.Conv2d:
    """A 3x3 conv initialised as the research head's mmcv `ConvModule` initialises its conv (`kaiming_init`: He
    normal over the fan-out, for a ReLU, and zero bias), not with PyTorch's default: a probe trained from scratch
    then starts where the research code's does (activations about 6x larger than under the default at C = 384)."""
    conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    nn.init.zeros_(conv.bias)
    return conv

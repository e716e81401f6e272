"""The segmentation head: features at the upsampled grid -> one logit per pixel."""

from __future__ import annotations

from torch import Tensor, nn


class SegmentationHead(nn.Module):
    """iSegProbe's head: two 3x3 conv + ReLU at the feature dim, then a 1x1 conv to one logit.

    At full resolution those C -> C convs dominate a cached step (benchmarks/train_throughput.py times each part of
    one), so `width` optionally reduces C with a 1x1 conv first and runs the 3x3 convs at that width.
    """

    def __init__(self, dim: int, width: int | None = None) -> None:
        super().__init__()
        inner = dim if width is None else width
        self.reduce = nn.Identity() if width is None else nn.Conv2d(dim, width, kernel_size=1)
        self.body = nn.Sequential(
            nn.Conv2d(inner, inner, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(inner, inner, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
        )
        self.logit = nn.Conv2d(inner, 1, kernel_size=1)

    def decode(self, reduced: Tensor) -> Tensor:
        """The head after its 1x1 reduction, for a probe that reduces before a channel-wise upsampler."""
        return self.logit(self.body(reduced))

    def forward(self, features: Tensor) -> Tensor:
        return self.decode(self.reduce(features))

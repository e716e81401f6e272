"""A featurizer in miniature for probe and trainer tests, where a timm ViT would only cost time."""

from __future__ import annotations

import torch
from torch import nn


class StandInFeaturizer(nn.Module):
    """The featurizer contract: frozen, forward(images, token_bias) -> [B, dim, H/p, W/p]."""

    def __init__(
        self,
        dim: int = 32,
        embed_dim: int = 24,
        patch_size: int = 8,
        mean: tuple[float, float, float] = (0.5, 0.5, 0.5),
        std: tuple[float, float, float] = (0.25, 0.25, 0.25),
    ) -> None:
        super().__init__()
        self.dim, self.embed_dim, self.patch_size = dim, embed_dim, patch_size
        self.mean, self.std = mean, std
        self.provenance = {"name": "stand-in", "patch_size": patch_size}
        self.embed = nn.Conv2d(3, embed_dim, patch_size, stride=patch_size)
        self.block = nn.Sequential(
            nn.Conv2d(embed_dim, embed_dim, 3, padding=1), nn.GELU(), nn.Conv2d(embed_dim, dim, 1)
        )
        self.requires_grad_(False)
        self.eval()

    def forward(self, images: torch.Tensor, token_bias: torch.Tensor | None = None) -> torch.Tensor:
        tokens = self.embed(images)
        if token_bias is not None:
            tokens = tokens + token_bias
        return self.block(tokens)

"""RITM's normalized focal loss (`NormalizedFocalLossSigmoid`), kept formula for formula so losses compare.

Focal weights (1 - p_t)**gamma are rescaled per image so that they sum to the number of counted pixels; the
rescaling factor is detached (RITM's `detach_delimeter=True`). Ignored pixels get no weight and are left out of the
per-image mean.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def normalized_focal_loss(
    logits: Tensor, target: Tensor, valid: Tensor, alpha: float = 0.5, gamma: float = 2.0, eps: float = 1e-12
) -> Tensor:
    """Per-image loss [B] from logits [B, 1, H, W], target 0/1 and valid (counted) pixels, both [B, 1, H, W]."""
    label = target.to(torch.float32)
    weight = valid.to(torch.bool)
    prob = torch.sigmoid(logits.to(torch.float32))
    alpha_t = torch.where(label > 0.5, alpha * weight, (1 - alpha) * weight)
    p_t = torch.where(weight, 1.0 - torch.abs(label - prob), torch.ones_like(prob))
    beta = (1.0 - p_t) ** gamma
    counted = weight.sum(dim=(-2, -1), keepdim=True)
    scale = (counted / (beta.sum(dim=(-2, -1), keepdim=True) + eps)).detach()
    log_p_t = torch.log(torch.clamp(p_t + eps, max=1.0))
    loss = -alpha_t * beta * scale * log_p_t * weight
    reduce_dims = tuple(range(1, loss.ndim))
    return loss.sum(dim=reduce_dims) / (weight.sum(dim=reduce_dims) + eps)


def masked_bce(logits: Tensor, target: Tensor, valid: Tensor) -> Tensor:
    """Per-image binary cross-entropy [B] over the valid pixels; inputs as in `normalized_focal_loss`.

    Logged beside the normalized focal loss because that loss is a mean over the hardest pixels only: it stays
    high while a probe that cannot place boundaries inside a patch gets everything else right, whereas the BCE
    counts every pixel alike and shows that progress.
    """
    weight = valid.to(torch.float32)
    per_pixel = F.binary_cross_entropy_with_logits(logits.float(), target.to(torch.float32), reduction="none")
    reduce_dims = tuple(range(1, per_pixel.ndim))
    return (per_pixel * weight).sum(dim=reduce_dims) / weight.sum(dim=reduce_dims).clamp(min=1)


class NormalizedFocalLoss(nn.Module):
    def __init__(self, alpha: float = 0.5, gamma: float = 2.0) -> None:
        super().__init__()
        self.alpha = alpha
        self.gamma = gamma

    def forward(self, logits: Tensor, target: Tensor, valid: Tensor) -> Tensor:
        """Batch mean of the per-image losses, as RITM's trainer reduces them."""
        return normalized_focal_loss(logits, target, valid, self.alpha, self.gamma).mean()

"""Features as colours: the three principal directions of one image's low-resolution features, mapped to RGB.

By default the directions and the colour range are fitted once, on the low-resolution features, and every
upsampler's output is drawn through the same map: the same colour then means the same feature in every panel, so an
upsampler that drifts away from the featurizer's feature space shows as a change of colour, not just of sharpness.
An output far from that space (an upsampler trained inside a probe, say) then looks flat; fitting each panel on its
own tokens shows its structure instead, at the price of colours that no longer compare across panels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

# The colour range spans these quantiles of the low-resolution projections: a few extreme tokens (such as the
# high-norm artefact tokens of ViTs without registers) would otherwise wash every other colour out.
RANGE_QUANTILES = (0.01, 0.99)
FIT_TOKENS = 20_000


@dataclass
class PcaColours:
    """Projection onto three principal directions of [C, h, w] features, and the range drawn as 0..255."""

    mean: Tensor  # [C]
    components: Tensor  # [3, C]
    low: Tensor  # [3]
    high: Tensor  # [3]

    @classmethod
    def fit(cls, features: Tensor, max_tokens: int = FIT_TOKENS) -> PcaColours:
        """Fit on the tokens of `features` [C, h, w]: all of them for a low-res grid (exact SVD), a seeded sample of
        `max_tokens` for an upsampled map."""
        tokens = features.flatten(1).T.float()
        if len(tokens) > max_tokens:
            generator = torch.Generator().manual_seed(0)
            tokens = tokens[torch.randperm(len(tokens), generator=generator)[:max_tokens]]
        if min(tokens.shape) < 3:
            raise ValueError(f"three colours need at least 3 tokens and 3 channels, got {tuple(tokens.shape)}")
        mean = tokens.mean(dim=0)
        components = torch.linalg.svd(tokens - mean, full_matrices=False).Vh[:3]
        projected = (tokens - mean) @ components.T
        low, high = torch.quantile(projected, torch.tensor(RANGE_QUANTILES), dim=0)
        return cls(mean, components, low, high)

    def rgb(self, features: Tensor) -> np.ndarray:
        """uint8 [H, W, 3] picture of `features` [C, H, W] (any resolution, same channels as the fitted ones)."""
        centred = features.float() - self.mean[:, None, None]
        projected = torch.einsum("chw,kc->hwk", centred, self.components)
        scaled = (projected - self.low) / (self.high - self.low).clamp_min(1e-12)
        return (scaled.clamp(0, 1) * 255).round().to(torch.uint8).numpy()

"""The channel order of attention keys, apart from the ViT featurizers so that `import-seed` reads it without timm.

isegprobe's keys featurizer lays head h, channel d out as channel h * head_dim + d; the research code (like FeatUp)
as d * num_heads + h.
"""

from __future__ import annotations

import torch
from torch import Tensor


def research_key_channels(num_heads: int, head_dim: int) -> Tensor:
    """Research channel c of the keys is channel research_key_channels(...)[c] of isegprobe's."""
    channel = torch.arange(num_heads * head_dim)
    return (channel % num_heads) * head_dim + channel // num_heads

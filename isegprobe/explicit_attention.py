"""Attention written out as the iSegProbe research code's own model copies compute it: the product of queries and
keys, a softmax, the product with the values, each its own kernel.

PyTorch's fused `scaled_dot_product_attention` computes the same function, rounded otherwise (about 1e-6 relative
in float32 on a CPU). Under `research_precision` the featurizers, click encoder and upsampler whose research copies
write attention out run it so, so that their outputs are the research code's to the bit; the two orders below are
the two that code uses.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

# (q, k, v [B, heads, tokens, head_dim], scale) -> [B, heads, tokens, head_dim]
AttentionOrder = Callable[[Tensor, Tensor, Tensor, float], Tensor]


def queries_scaled_first(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """softmax((q * scale) @ k^T) @ v: DINOv2's `Attention` (its `MemEffAttention` without xformers, which the
    research code's requirements do not install), timm's own unfused path, and `nn.MultiheadAttention` asked for
    its weights (LoftUp's)."""
    return ((q * scale) @ k.transpose(-2, -1)).softmax(dim=-1) @ v


def products_scaled(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """softmax((q @ k^T) * scale) @ v: DINO's ViT (the research code's supervised ViT) and SimpleViT's `Attention`."""
    return ((q @ k.transpose(-2, -1)) * scale).softmax(dim=-1) @ v

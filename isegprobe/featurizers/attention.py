"""xformers' memory-efficient attention for timm ViTs on CUDA, when xformers is installed; timm's SDPA otherwise."""

from __future__ import annotations

import functools
from collections.abc import Callable

from timm.layers import Attention
from torch import Tensor, nn

# (q, k, v as [batch, tokens, heads, head_dim], p=dropout) -> [batch, tokens, heads, head_dim]: xformers' layout
AttentionKernel = Callable[..., Tensor]


@functools.lru_cache(maxsize=1)
def xformers_kernel() -> AttentionKernel | None:
    try:
        from xformers.ops import memory_efficient_attention
    except ImportError:
        return None
    return memory_efficient_attention


def attention_with_kernel(attn: Attention, x: Tensor, kernel: AttentionKernel) -> Tensor:
    """timm's `Attention.forward` (no mask, not causal) with the attention product done by `kernel`."""
    batch, tokens, _ = x.shape
    gate = attn.gate(x).sigmoid() if getattr(attn, "gate", None) is not None else None
    q, k, v = attn.qkv(x).reshape(batch, tokens, 3, attn.num_heads, attn.head_dim).unbind(2)
    q, k = attn.q_norm(q), attn.k_norm(k)
    x = kernel(q, k, v, p=attn.attn_drop.p if attn.training else 0.0)
    x = x.reshape(batch, tokens, attn.num_heads * attn.head_dim)
    x = getattr(attn, "norm", nn.Identity())(x)
    if gate is not None:
        x = x * gate
    return attn.proj_drop(attn.proj(x))


class MemoryEfficientAttention(Attention):
    """A timm `Attention` whose CUDA path runs xformers; CPU inputs, masks and causal attention keep timm's path."""

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        kernel = xformers_kernel()
        if kernel is None or not x.is_cuda or attn_mask is not None or is_causal:
            return super().forward(x, attn_mask=attn_mask, is_causal=is_causal)
        return attention_with_kernel(self, x, kernel)


def use_memory_efficient_attention(model: nn.Module) -> int:
    """Switch every plain timm `Attention` in `model` to `MemoryEfficientAttention` if xformers is importable.

    The device is checked at each call, so the switch is harmless on CPU and survives `.to(device)`.
    Returns how many modules were switched.
    """
    if xformers_kernel() is None:
        return 0
    switched = 0
    for module in model.modules():
        if type(module) is Attention:
            module.__class__ = MemoryEfficientAttention
            switched += 1
    return switched

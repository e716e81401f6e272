"""A timm CLIP image tower run as OpenAI's CLIP code runs its model on a GPU: in float16.

OpenAI's `clip.load` converts the convolutions', linear layers' and attention's weights and the projection to
float16 on CUDA (`convert_weights`); its LayerNorm casts its input to float32, normalizes with float32 parameters
and casts back; the class and position embeddings stay float32 and are cast to float16 where they are added. Every
other operation takes and gives float16. The iSegProbe research code loads MaskCLIP so, in training and evaluation
on a GPU (on a CPU, `clip.load` turns the model back to float32). Here the same order of casts and operations runs
on timm's modules, so that a probe sees the features that the research code's probe saw.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block, VisionTransformer
from torch import Tensor, nn

from isegprobe.featurizers.positions import tokens_with_positions

# DINO's interpolation, as FeatUp's and the research code's MaskCLIP resample CLIP's position table.
CLIP_POSITION_OFFSET, CLIP_POSITION_ANTIALIAS = 0.1, False


def float16_weights(model: VisionTransformer) -> None:
    """`convert_weights` on timm's modules: every convolution's and linear layer's weight and bias in float16 (the
    attention's fused qkv and output projection, the MLP, the patch embedding and the projection head are all
    such layers); LayerNorm parameters and the class and position embeddings stay float32."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            module.half()


def is_float16(model: VisionTransformer) -> bool:
    """Whether `float16_weights` has run on `model`."""
    return model.patch_embed.proj.weight.dtype == torch.float16


def layer_norm(norm: nn.LayerNorm, x: Tensor) -> Tensor:
    """CLIP's LayerNorm: normalized in float32 with the float32 parameters, given back in the input's dtype."""
    return F.layer_norm(x.float(), norm.normalized_shape, norm.weight, norm.bias, norm.eps).to(x.dtype)


def embedded_tokens(model: VisionTransformer, images: Tensor, token_bias: Tensor | None) -> Tensor:
    """float32 images [B, 3, H, W] -> float16 tokens after `ln_pre`. A `token_bias` (float32 [B, C, h, w]) is
    added to the float16 patch tokens and the sum rounded to float16, as the research code's in-place add into them
    does."""
    x = model.patch_embed(images.half())  # [B, h, w, C]
    if token_bias is not None:
        x = (x + token_bias.permute(0, 2, 3, 1)).half()
    x = tokens_with_positions(model, x, CLIP_POSITION_OFFSET, CLIP_POSITION_ANTIALIAS, dtype=torch.float16)
    return layer_norm(model.norm_pre, x)


def block(module: Block, x: Tensor) -> Tensor:
    """A residual attention block of CLIP in float16: PyTorch's scaled-dot-product attention, as the research
    code's nn.MultiheadAttention computes it, between the fused qkv and the output projection."""
    x = x + module.ls1(_attention(module, layer_norm(module.norm1, x)))
    return x + module.ls2(module.mlp(layer_norm(module.norm2, x)))


def _attention(module: Block, x: Tensor) -> Tensor:
    attn = module.attn
    batch, tokens, channels = x.shape
    q, k, v = attn.qkv(x).reshape(batch, tokens, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    attended = F.scaled_dot_product_attention(attn.q_norm(q), attn.k_norm(k), v)
    return attn.proj(attended.transpose(1, 2).reshape(batch, tokens, channels))

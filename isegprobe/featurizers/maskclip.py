"""MaskCLIP: dense CLIP features from the value path of the last block (Zhou et al., "Extract Free Dense Labels
from CLIP", ECCV 2022), as FeatUp / LoftUp / iSegProbe compute it.

The last block keeps only out_proj(v(ln_1(x))): no query-key attention, no residual, no MLP. Then ln_post and the
CLIP projection are applied to every token, giving 512-d tokens in CLIP's joint image-text space (ViT-B/16). At a grid
other than CLIP's own 14 x 14, the position table is interpolated as those three codes do it (DINO's rule).

With `research_precision`, a GPU runs it as the research code's `clip.load` leaves it there: in float16
(`clip_float16`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from timm.layers import Attention
from timm.models import split_model_name_tag
from timm.models.vision_transformer import Block, VisionTransformer
from torch import Tensor, nn

from isegprobe.errors import UserError
from isegprobe.featurizers import clip_float16
from isegprobe.featurizers.positions import tokens_with_positions
from isegprobe.featurizers.registry import ARCH_SLOT, register_featurizer
from isegprobe.featurizers.timm_names import check_timm_vit
from isegprobe.featurizers.vit import TimmViTFeaturizer

# OpenAI's CLIP ViT-B/16 was trained with QuickGELU: timm's plain `vit_base_patch16_clip_224` would use GELU
# with the same weights and give different features.
DEFAULT_CLIP_ARCH = "vit_base_patch16_clip_quickgelu_224.openai"


@register_featurizer("maskclip")
class MaskCLIPFeaturizer(TimmViTFeaturizer):
    """CLIP's value path in the last block, projected into the text space: dense features that keep CLIP semantics.
    `maskclip` is OpenAI's ViT-B/16; `maskclip:<timm CLIP ViT name>` another CLIP image tower."""

    output = "maskclip"
    position_resampling = "dino"
    accepts = ("maskclip", f"maskclip:{ARCH_SLOT}")
    model_kwargs: ClassVar[dict[str, Any]] = {"dynamic_img_size": True}  # keeps the CLIP projection (timm: head)

    @classmethod
    def timm_architecture(cls, name: str, arch: str | None) -> str:
        if arch is None:
            return DEFAULT_CLIP_ARCH
        check_timm_vit(arch)
        if "clip" not in split_model_name_tag(arch)[0]:
            raise UserError(f"{name}: MaskCLIP needs a CLIP image tower, e.g. maskclip:{DEFAULT_CLIP_ARCH}")
        return arch

    @classmethod
    def check_model(cls, name: str, model: Any) -> None:
        super().check_model(name, model)
        block = model.blocks[-1]
        has_value_path = isinstance(block, Block) and isinstance(block.attn, Attention)
        if not has_value_path or not isinstance(model.head, nn.Linear):
            raise UserError(f"{name}: MaskCLIP needs a CLIP image tower (timm Block/Attention and a projection head)")

    @classmethod
    def output_dim(cls, model: VisionTransformer) -> int:
        return model.head.out_features

    def embed_positions(self, x: Tensor) -> Tensor:
        return tokens_with_positions(
            self.model, x, clip_float16.CLIP_POSITION_OFFSET, clip_float16.CLIP_POSITION_ANTIALIAS
        )

    def forward(self, images: Tensor, token_bias: Tensor | None = None) -> Tensor:
        if self.research_precision and images.is_cuda:
            return self.forward_float16(images, token_bias)
        if clip_float16.is_float16(self.model):
            raise ValueError(f"{self.name} ran in float16 (research precision on a GPU) and has float16 weights since")
        return super().forward(images, token_bias)

    def forward_float16(self, images: Tensor, token_bias: Tensor | None = None) -> Tensor:
        """The features as OpenAI's CLIP code computes them on a GPU (`clip_float16`), on any device, as float32.
        The weights become float16 at the first call, as `clip.load` leaves them."""
        grid = self.feature_grid(images, token_bias)
        model = self.model
        if not clip_float16.is_float16(model):
            clip_float16.float16_weights(model)
        with torch.autocast(images.device.type, enabled=False):
            x = clip_float16.embedded_tokens(model, images, token_bias)
            for block in model.blocks[:-1]:
                x = clip_float16.block(block, x)
            x = self.projected_values(x, clip_float16.layer_norm)[:, model.num_prefix_tokens :]
        return self.feature_map(x.float(), grid)

    def last_block(self, x: Tensor) -> Tensor:
        return self.projected_values(x, lambda norm, tokens: norm(tokens))

    def projected_values(self, x: Tensor, layer_norm: Callable[[nn.Module, Tensor], Tensor]) -> Tensor:
        """The last block's value path, ln_post and the CLIP projection, each LayerNorm applied by `layer_norm`."""
        block = self.model.blocks[-1]
        attn = block.attn
        width = attn.num_heads * attn.head_dim
        bias = attn.qkv.bias[2 * width :] if attn.qkv.bias is not None else None
        values = F.linear(layer_norm(block.norm1, x), attn.qkv.weight[2 * width :], bias)  # qkv rows: [q | k | v]
        return self.model.head(layer_norm(self.model.norm, attn.proj(values)))

"""timm ViT featurizers: the last block's normalized tokens (`<timm ViT name>`), or the last block's attention keys
(`<timm ViT name>:keys`)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch.nn.functional as F
from timm.layers import Attention
from timm.models.vision_transformer import Block, VisionTransformer
from torch import Tensor

from isegprobe.errors import UserError
from isegprobe.explicit_attention import AttentionOrder, products_scaled
from isegprobe.featurizers.key_channels import research_key_channels
from isegprobe.featurizers.normalization import DEFAULT_NORMALIZATION
from isegprobe.featurizers.registry import ARCH_SLOT, register_featurizer
from isegprobe.featurizers.timm_base import TimmFeaturizer
from isegprobe.featurizers.timm_names import check_timm_vit, is_timm_vit
from isegprobe.featurizers.weights import WeightsSource


class TimmViTFeaturizer(TimmFeaturizer):
    """Patch embedding (+ token_bias), every block but the last, then `last_block`, which each output kind defines.

    Position embeddings are resampled to any grid (timm's `dynamic_img_size`); class and register tokens are
    dropped from the output.
    """

    # The featurizer names a registered family accepts: fixed names, or forms with an `{arch}` slot (a timm ViT name).
    accepts: ClassVar[tuple[str, ...]] = ()
    # timm.create_model arguments this output needs; a classifier head is dropped unless the output uses it.
    model_kwargs: ClassVar[dict[str, Any]] = {"dynamic_img_size": True, "num_classes": 0}
    # How the iSegProbe research code's own copy of this model writes attention out, which `research_precision`
    # follows (None: the code has no copy of its own, or its copy runs PyTorch's fused kernel as timm does).
    research_attention: ClassVar[AttentionOrder | None] = None

    def __init__(
        self, name: str, model: VisionTransformer, weights: WeightsSource, normalization: str = DEFAULT_NORMALIZATION
    ) -> None:
        self.check_model(name, model)
        patch_height, patch_width = model.patch_embed.patch_size
        if patch_height != patch_width:
            raise UserError(f"{name}: non-square patches {patch_height}x{patch_width} are not supported")
        super().__init__(
            name,
            model,
            weights,
            normalization,
            patch_size=patch_height,
            dim=self.output_dim(model),
            embed_dim=model.embed_dim,
        )

    @classmethod
    def claims(cls, arch: str | None, block: int | None) -> bool:
        """Whether this family builds `arch` (None: one of its fixed names): the last block of a timm ViT."""
        return block is None and (arch is None or is_timm_vit(arch))

    @classmethod
    def timm_kwargs(cls, arch: str) -> dict[str, Any]:
        return cls.model_kwargs

    @classmethod
    def timm_architecture(cls, name: str, arch: str | None) -> str:
        """The timm model to build for `name`, whose `{arch}` slot holds `arch` (None for a fixed name); a
        UserError says what is wrong with a name this family accepts in form but cannot build."""
        if arch is None:
            raise NotImplementedError(f"{cls.__name__} accepts fixed names but maps none of them to a timm model")
        check_timm_vit(arch)
        return arch

    @classmethod
    def check_model(cls, name: str, model: Any) -> None:
        """Raise UserError if `model` lacks what this output reads."""
        if not isinstance(model, VisionTransformer):
            raise UserError(f"{name}: {type(model).__name__} is not a timm VisionTransformer")

    @classmethod
    def output_dim(cls, model: VisionTransformer) -> int:
        return model.embed_dim

    def last_block(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def embed_positions(self, x: Tensor) -> Tensor:
        """Patch tokens [B, h, w, C] -> the token sequence with prefix tokens and position embeddings (timm's
        resampling to the grid: bicubic, antialiased)."""
        return self.model._pos_embed(x)

    def forward(self, images: Tensor, token_bias: Tensor | None = None) -> Tensor:
        grid = self.feature_grid(images, token_bias)
        model = self.model
        x = model.patch_embed(images)  # [B, H/p, W/p, C]: dynamic_img_size keeps the grid until the pos embed
        if token_bias is not None:
            x = x + token_bias.permute(0, 2, 3, 1)
        x = model.norm_pre(model.patch_drop(self.embed_positions(x)))
        for block in model.blocks[:-1]:
            x = self.run_block(block, x)
        return self.feature_map(self.last_block(x)[:, model.num_prefix_tokens :], grid)

    def feature_map(self, tokens: Tensor, grid: tuple[int, int]) -> Tensor:
        """Patch tokens [B, h*w, C] -> [B, C, h, w], contiguous; under `research_precision` kept in the tokens'
        memory order (channels last), as the research code's featurizers hand their features over (a permuted view
        of the token grid): on a CPU the convolutions and interpolations after them round otherwise on NCHW memory
        (up to 1e-6 in a 3x3 conv head)."""
        features = tokens.reshape(tokens.shape[0], *grid, -1).permute(0, 3, 1, 2)
        return features if self.research_precision else features.contiguous()

    def run_block(self, block: Block, x: Tensor) -> Tensor:
        """`block(x)`, its attention written out as the research code writes it under `research_precision`."""
        order = type(self).research_attention
        if not self.research_precision or order is None:
            return block(x)
        attn = block.attn
        batch, tokens, _ = x.shape
        qkv = attn.qkv(block.norm1(x)).reshape(batch, tokens, 3, attn.num_heads, attn.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        attended = order(attn.q_norm(q), attn.k_norm(k), v, attn.scale).transpose(1, 2).reshape(batch, tokens, -1)
        x = x + block.ls1(attn.proj(attn.norm(attended)))
        return x + block.ls2(block.mlp(block.norm2(x)))


@register_featurizer("timm_vit")
class ViTTokensFeaturizer(TimmViTFeaturizer):
    """The last block's output after the final norm: what timm's `forward_features` gives, patch tokens only."""

    output = "tokens"
    accepts = (ARCH_SLOT,)

    def last_block(self, x: Tensor) -> Tensor:
        return self.model.norm(self.run_block(self.model.blocks[-1], x))


@register_featurizer("timm_vit_keys")
class ViTKeysFeaturizer(TimmViTFeaturizer):
    """The last block's attention keys (heads merged, k_norm applied): often better localized than the tokens."""

    output = "keys"
    accepts = (f"{ARCH_SLOT}:keys",)
    research_attention = products_scaled  # the research code's ViT runs DINO's ViT code

    @classmethod
    def check_model(cls, name: str, model: Any) -> None:
        super().check_model(name, model)
        block = model.blocks[-1]
        if not isinstance(block, Block) or not isinstance(block.attn, Attention):
            raise UserError(f"{name}: keys need a pre-norm block with a fused qkv projection (timm Block/Attention)")

    @classmethod
    def output_dim(cls, model: VisionTransformer) -> int:
        attn = model.blocks[-1].attn
        return attn.num_heads * attn.head_dim

    @property
    def research_channels(self) -> Tensor:
        attn = self.model.blocks[-1].attn
        return research_key_channels(attn.num_heads, attn.head_dim)

    def last_block(self, x: Tensor) -> Tensor:
        block = self.model.blocks[-1]
        attn = block.attn
        start, stop = self.dim, 2 * self.dim  # qkv rows are laid out [q | k | v]
        bias = attn.qkv.bias[start:stop] if attn.qkv.bias is not None else None
        keys = F.linear(block.norm1(x), attn.qkv.weight[start:stop], bias)
        batch, tokens, _ = keys.shape
        keys = attn.k_norm(keys.reshape(batch, tokens, attn.num_heads, attn.head_dim))
        return keys.reshape(batch, tokens, self.dim)

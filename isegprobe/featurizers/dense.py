"""Any timm model with `forward_intermediates` (DINOv3, EVA02, SAM ViT, ConvNeXt, ResNet, ...): the normed output
of one block or stage, as timm's own feature API computes it, so no model needs code of its own here.

timm's plain ViTs keep their family (vit.py), which also adds clicks to the patch embeddings; `<ViT name>@BLOCK`
comes here. This family runs timm's forward untouched, so it supports late fusion only.
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import timm
import torch
from torch import Tensor, nn

from isegprobe.errors import UserError
from isegprobe.featurizers.normalization import DEFAULT_NORMALIZATION
from isegprobe.featurizers.registry import ARCH_SLOT, register_featurizer, split_block
from isegprobe.featurizers.timm_base import TimmFeaturizer
from isegprobe.featurizers.timm_names import check_timm_model, is_timm_vit
from isegprobe.featurizers.weights import WeightsSource


@register_featurizer("timm_dense")
class DenseFeaturizer(TimmFeaturizer):
    """`forward_intermediates(x, indices=[block], norm=True, output_fmt="NCHW", intermediates_only=True)`: block
    `@BLOCK` of the name (negative from the end; the last by default), with timm's final norm applied where timm
    applies it (every block of ViT-likes, the last stage of ConvNeXt, SAM's neck). Stride and channels are
    measured, since a normed output can differ from timm's `feature_info`."""

    output: ClassVar[str] = "intermediates"
    accepts: ClassVar[tuple[str, ...]] = (ARCH_SLOT,)
    stride_name = "stride"
    supports_early_fusion = False
    normed: ClassVar[bool] = True

    def __init__(
        self, name: str, model: nn.Module, weights: WeightsSource, normalization: str = DEFAULT_NORMALIZATION
    ) -> None:
        blocks = _feature_blocks(name, model)
        block = _block_index(name, len(blocks))
        model.eval()
        stride, dim = _measure(name, model, block, int(blocks[block]["reduction"]))
        super().__init__(
            name,
            model,
            weights,
            normalization,
            patch_size=stride,
            dim=dim,
            embed_dim=dim,
            family_keys={"block": block, "num_blocks": len(blocks), "normed": self.normed},
        )
        self.block = block

    @classmethod
    def claims(cls, arch: str | None, block: int | None) -> bool:
        """Every timm name but the plain ViTs, whose last block their own family computes; any of them with
        `@BLOCK`. Names timm does not know come here too, for `timm_architecture` to say so."""
        return arch is not None and (block is not None or not is_timm_vit(arch))

    @classmethod
    def timm_architecture(cls, name: str, arch: str | None) -> str:
        if arch is None:
            raise NotImplementedError(f"{cls.__name__} has no fixed names")
        check_timm_model(arch)
        return arch

    @classmethod
    def timm_kwargs(cls, arch: str) -> dict[str, Any]:
        """No classifier; ViT-likes resample position embeddings (and RoPE) to the working grid."""
        return {"num_classes": 0, **({"dynamic_img_size": True} if takes_dynamic_img_size(arch) else {})}

    def forward(self, images: Tensor, token_bias: Tensor | None = None) -> Tensor:
        if token_bias is not None:
            raise UserError(late_fusion_only(self.name))
        grid = self.feature_grid(images, None)
        features = _intermediate(self.model, images, self.block)
        if tuple(features.shape[-2:]) != grid:
            raise ValueError(f"{self.name}: block {self.block} gave a {tuple(features.shape[-2:])} grid, not {grid}")
        return features.contiguous()


def _intermediate(model: nn.Module, images: Tensor, block: int) -> Tensor:
    """timm's normed output of `block` (later blocks are not run: `stop_early` changes nothing else)."""
    return model.forward_intermediates(
        images,
        indices=[block],
        norm=DenseFeaturizer.normed,
        stop_early=True,
        output_fmt="NCHW",
        intermediates_only=True,
    )[-1]


@torch.inference_mode()
def _measure(name: str, model: nn.Module, block: int, reduction: int) -> tuple[int, int]:
    """(stride, channels) of the block's output, from one forward on a 4x4 grid: `feature_info` gives the trunk's
    channels, and a normed output can have others (SAM's neck maps 768 to 256)."""
    side = 4 * reduction
    features = _intermediate(model, torch.zeros(1, 3, side, side, device=_device(model)), block)
    rows, cols = features.shape[-2:]
    if rows != cols or side % rows:
        raise UserError(f"{name}: a {side}x{side} image gave a {rows}x{cols} grid, not one of stride {reduction}")
    return side // rows, int(features.shape[1])


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def late_fusion_only(name: str) -> str:
    return (
        f"{name}: the timm_dense featurizer family supports late fusion only (fusion after_backbone or "
        "after_upsampler): timm's forward takes no clicks in the patch embeddings"
    )


@functools.cache
def takes_dynamic_img_size(arch: str) -> bool:
    """Whether timm builds `arch` with `dynamic_img_size`; asked on the meta device, which allocates nothing and
    draws no random numbers from the seeded generator."""
    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            timm.create_model(arch, pretrained=False, num_classes=0, dynamic_img_size=True)
    except TypeError:
        return False
    return True


def _feature_blocks(name: str, model: nn.Module) -> list[dict[str, Any]]:
    """timm's `feature_info`: one entry per index `forward_intermediates` takes, with its channels and stride."""
    blocks = getattr(model, "feature_info", None)
    if not callable(getattr(model, "forward_intermediates", None)) or not blocks:
        raise UserError(f"{name}: timm's {type(model).__name__} has no forward_intermediates, so no dense features")
    return list(blocks)


def _block_index(name: str, count: int) -> int:
    _, block = split_block(name)
    if block is None:
        return count - 1
    if not -count <= block < count:
        raise UserError(
            f"{name}: no block {block}; the model has {count} (0 to {count - 1}, or -{count} to -1 from the end)"
        )
    return block % count

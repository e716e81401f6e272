"""DINOv2 as torch.hub builds it (`torch.hub.load("facebookresearch/dinov2", "dinov2_vits14")`), on timm's model.

timm's `vit_*_patch14_dinov2` holds the same weights and blocks, but reaches a grid other than the 37x37 it was
trained at by its own position-embedding resampling (bicubic to the target size, antialiased). The official models
without registers interpolate bicubically by a scale factor of (n + 0.1) / 37, without antialiasing: at 224 px (16x16
tokens) the two give different position embeddings and so different features. These featurizers follow the official
hub entry point's own settings, so that the features equal the official model's: what the iSegProbe research code
and DINOv2's own evaluations ran. (The register models' entry points resample as timm does.)
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from isegprobe.featurizers.registry import register_featurizer
from isegprobe.featurizers.vit import ViTTokensFeaturizer


class HubModel(NamedTuple):
    """A torch.hub entry point: the timm architecture with the same weights (timm converts the official checkpoint
    files) and the entry point's `interpolate_offset` / `interpolate_antialias`."""

    architecture: str
    interpolate_offset: float
    interpolate_antialias: bool


DINOV2_HUB_MODELS = {
    **{
        f"dinov2_vit{size}14": HubModel(f"vit_{width}_patch14_dinov2.lvd142m", 0.1, False)
        for size, width in (("s", "small"), ("b", "base"), ("l", "large"), ("g", "giant"))
    },
    **{
        f"dinov2_vit{size}14_reg": HubModel(f"vit_{width}_patch14_reg4_dinov2.lvd142m", 0.0, True)
        for size, width in (("s", "small"), ("b", "base"), ("l", "large"), ("g", "giant"))
    },
}


def official_patch_positions(positions: Tensor, rows: int, cols: int, offset: float, antialias: bool) -> Tensor:
    """The patch position embeddings [1, M*M, C] at a rows x cols grid: DINOv2's `interpolate_pos_encoding`.

    The official model returns its table unchanged only when the image is square and has M*M patches; otherwise it
    interpolates bicubically in float32, by the scale factors ((rows + offset) / M, (cols + offset) / M) when it has
    an offset ("a small number to avoid floating point error"), else to the size itself.
    """
    side = round(positions.shape[1] ** 0.5)
    if rows == cols and rows * cols == side * side:
        return positions
    grid = positions.float().reshape(1, side, side, -1).permute(0, 3, 1, 2)
    if offset:
        scale = ((rows + offset) / side, (cols + offset) / side)
        grid = F.interpolate(grid, scale_factor=scale, mode="bicubic", antialias=antialias)
    else:
        grid = F.interpolate(grid, size=(rows, cols), mode="bicubic", antialias=antialias)
    if tuple(grid.shape[-2:]) != (rows, cols):
        raise ValueError(f"position interpolation to {rows}x{cols} gave {tuple(grid.shape[-2:])}")
    return grid.permute(0, 2, 3, 1).reshape(1, rows * cols, -1).to(positions.dtype)


@register_featurizer("dinov2_hub")
class DINOv2HubFeaturizer(ViTTokensFeaturizer):
    """The last block's normalized patch tokens of the official DINOv2 (`x_norm_patchtokens`)."""

    position_resampling = "dinov2"
    accepts = tuple(DINOV2_HUB_MODELS)

    @classmethod
    def timm_architecture(cls, name: str, arch: str | None) -> str:
        return DINOV2_HUB_MODELS[name].architecture

    def embed_positions(self, x: Tensor) -> Tensor:
        """The official token layout: class token and patches get their positions, registers none (timm keeps the
        class token's position in its cls_token for the register models, as their checkpoints are converted)."""
        model = self.model
        batch, rows, cols, channels = x.shape
        prefix = model.num_prefix_tokens if not model.no_embed_class else 0
        table = model.pos_embed
        hub = DINOV2_HUB_MODELS[self.name]
        positions = official_patch_positions(
            table[:, prefix:], rows, cols, hub.interpolate_offset, hub.interpolate_antialias
        )
        patches = x.reshape(batch, rows * cols, channels) + positions
        tokens = [model.cls_token.expand(batch, -1, -1) + table[:, :prefix]] if prefix else []
        if model.no_embed_class:
            tokens.append(model.cls_token.expand(batch, -1, -1))
        if model.reg_token is not None:
            tokens.append(model.reg_token.expand(batch, -1, -1))
        return model.pos_drop(torch.cat([*tokens, patches], dim=1))

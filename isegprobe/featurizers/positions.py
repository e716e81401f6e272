"""Position embeddings on a grid other than the one a ViT was trained at, as DINO's `interpolate_pos_encoding`
computes them, where timm's `dynamic_img_size` resamples its own way (bicubic to the target size, antialiased).

DINO's rule is what the official DINOv2 hub models run, and what FeatUp, LoftUp and the iSegProbe research code run
for MaskCLIP (their `interpolate_positional_embedding`): at any grid but the trained one the two rules give other
position embeddings, and so other features.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor


def interpolated_patch_positions(positions: Tensor, rows: int, cols: int, offset: float, antialias: bool) -> Tensor:
    """The patch position embeddings [1, M*M, C] at a rows x cols grid.

    The table comes back unchanged only when the image is square and has M*M patches; otherwise it is interpolated
    bicubically in float32, by the scale factors ((rows + offset) / M, (cols + offset) / M) when there is an offset
    ("a small number to avoid floating point error"), else to the size itself.
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


def tokens_with_positions(
    model: VisionTransformer, x: Tensor, offset: float, antialias: bool, dtype: torch.dtype | None = None
) -> Tensor:
    """Patch tokens [B, rows, cols, C] -> the token sequence: the class token and the patches with their positions,
    registers with none (timm keeps the class token's position in its cls_token for models whose checkpoints are
    converted so). `dtype`: what the class token and the positions are cast to before they are added, as CLIP's
    float16 model casts them (None adds them as they are)."""
    batch, rows, cols, channels = x.shape
    prefix = model.num_prefix_tokens if not model.no_embed_class else 0
    table = model.pos_embed
    positions = interpolated_patch_positions(table[:, prefix:], rows, cols, offset, antialias)
    cls_token, prefix_positions = model.cls_token, table[:, :prefix]
    if dtype is not None:
        positions, prefix_positions = positions.to(dtype), prefix_positions.to(dtype)
        cls_token = cls_token.to(dtype) if cls_token is not None else None
    patches = x.reshape(batch, rows * cols, channels) + positions
    tokens = [cls_token.expand(batch, -1, -1) + prefix_positions] if prefix else []
    if model.no_embed_class:
        tokens.append(cls_token.expand(batch, -1, -1))
    if model.reg_token is not None:
        tokens.append(model.reg_token.expand(batch, -1, -1))
    return model.pos_drop(torch.cat([*tokens, patches], dim=1))

"""Any timm model with `forward_intermediates` (DINOv3, EVA02, SAM ViT, ConvNeXt, ResNet, ...): the normed output
of one block or stage, as timm's own feature API computes it, so no model needs code of its own here.

timm's plain ViTs keep their family (vit.py); `<ViT name>@BLOCK` comes here. timm's forward runs untouched: for
early fusion the click tokens are added to the output of the model's patch embedding (patch_tokens.py), so every
model with one (ViTs, Eva, SAM, RADIO) takes clicks, and a model without one (ConvNeXt, ResNet) late fusion only.
"""

from __future__ import annotations

import functools
from contextlib import nullcontext
from typing import Any, ClassVar

import timm
import torch
from timm.models.convnext import ConvNeXt
from timm.models.hiera import Hiera
from timm.models.hieradet_sam2 import HieraDet
from torch import Tensor, nn

from isegprobe.errors import UserError
from isegprobe.featurizers.normalization import DEFAULT_NORMALIZATION
from isegprobe.featurizers.patch_tokens import PatchTokens, find_patch_embedding, patch_tokens_of
from isegprobe.featurizers.registry import ARCH_SLOT, register_featurizer, split_block
from isegprobe.featurizers.timm_base import TimmFeaturizer
from isegprobe.featurizers.timm_names import check_timm_model, is_timm_vit
from isegprobe.featurizers.weights import WeightsSource

# timm models whose `forward_intermediates` has no normed output (it asserts `not norm`): MAE's Hiera and SAM2's
# (HieraDet), whose final norm belongs to the classifier head; their features are the stage's output as it is.
_WITHOUT_NORMED_INTERMEDIATES = (Hiera, HieraDet)


# What a timm model raises on an image size it was not built for: shapes that do not broadcast (position tables,
# attention biases), its own size assertions, relative-position tables indexed past their end (MViTv2)
_SIZE_FAILURES = (RuntimeError, AssertionError, IndexError)


@register_featurizer("timm_dense")
class DenseFeaturizer(TimmFeaturizer):
    """`forward_intermediates(x, indices=[block], norm=True, output_fmt="NCHW", intermediates_only=True)`: block
    `@BLOCK` of the name (negative from the end; the last by default), with timm's final norm applied where timm
    applies it: every block of ViT-likes, SAM's neck; ConvNeXt's `norm_pre` on its last stage, an identity for
    most ConvNeXts, whose final LayerNorm belongs to the classifier head that timm keeps out of this API, except
    DINOv3's ConvNeXt, whose authors apply it at every location of the last stage (`_norms_every_location`); none
    where timm has no normed output (Hiera, `normed` false in the provenance). Stride and channels are measured,
    since a normed output can differ from timm's `feature_info`; so are the patch embedding's layout and width,
    which early fusion's click tokens take (`embed_dim`), and whether the model runs only at the size timm built it
    for (Hiera's position table, LeViT's attention biases: `fixed_size`)."""

    output: ClassVar[str] = "intermediates"
    accepts: ClassVar[tuple[str, ...]] = (ARCH_SLOT,)
    stride_name = "stride"

    def __init__(
        self, name: str, model: nn.Module, weights: WeightsSource, normalization: str = DEFAULT_NORMALIZATION
    ) -> None:
        blocks = _feature_blocks(name, model)
        block = _block_index(name, len(blocks))
        model.eval()
        normed = not isinstance(model, _WITHOUT_NORMED_INTERMEDIATES)
        stride, dim, patch_tokens, fixed_size = _measure(name, model, block, int(blocks[block]["reduction"]), normed)
        norms_every_location = _norms_every_location(model, weights, block, len(blocks))
        super().__init__(
            name,
            model,
            weights,
            normalization,
            patch_size=stride,
            dim=dim,
            embed_dim=patch_tokens.width if patch_tokens else dim,
            family_keys={
                "block": block,
                "num_blocks": len(blocks),
                "normed": normed,
                **({"last_stage_norm": "dinov3"} if norms_every_location else {}),
                **({"fixed_size": fixed_size} if fixed_size else {}),
            },
        )
        self.block = block
        self.normed = normed
        self.fixed_size = fixed_size
        self.norms_every_location = norms_every_location
        self.patch_tokens = patch_tokens
        self.early_fusion_refusal = None if patch_tokens else late_fusion_only(model, stride)
        self._size_problems: dict[tuple[int, int], str | None] = {}

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

    def size_problem(self, height: int, width: int) -> str | None:
        """Beside a fixed size, what one forward at this size shows (once per size): some models run at the sizes
        measured when built but not at every multiple of their stride (MobileViTv2 rounds an odd grid up, so 96 px
        gives 4x4 features at stride 32; GhostNetV3 pools a 1x1 grid to nothing), which would otherwise end an
        extraction in a traceback."""
        problem = super().size_problem(height, width)
        if problem is not None or height % self.patch_size or width % self.patch_size:
            return problem
        problem = self._trial_problem(height, width)
        if problem is None or height != width:
            return problem
        near = [side for side in _near_sizes(height, self.patch_size) if self._trial_problem(side, side) is None]
        return f"{problem}; sizes near it that run: {', '.join(map(str, near))}" if near else problem

    def _trial_problem(self, height: int, width: int) -> str | None:
        """Why one zero image of this size fails or gives a grid other than the size over the stride, else None;
        asked once per size."""
        if (height, width) not in self._size_problems:
            self._size_problems[height, width] = self._run_once(height, width)
        return self._size_problems[height, width]

    @torch.inference_mode()
    def _run_once(self, height: int, width: int) -> str | None:
        grid = (height // self.patch_size, width // self.patch_size)
        zeros = torch.zeros(1, 3, height, width, device=_device(self.model))
        try:
            got = tuple(_intermediate(self.model, zeros, self.block, self.normed).shape[-2:])
        except _SIZE_FAILURES as error:
            return f"does not run on a {height}x{width} px image (timm's {type(self.model).__name__}: {error})"
        if got != grid:
            return (
                f"gives a {got[0]}x{got[1]} grid on a {height}x{width} px image, not the {grid[0]}x{grid[1]} of its "
                f"{self.stride_name} {self.patch_size} (timm's {type(self.model).__name__})"
            )
        return None

    def forward(self, images: Tensor, token_bias: Tensor | None = None) -> Tensor:
        if token_bias is not None and self.patch_tokens is None:
            raise UserError(f"{self.name}: {self.early_fusion_refusal}")
        grid = self.feature_grid(images, token_bias)
        with self.patch_tokens.adding(token_bias) if self.patch_tokens and token_bias is not None else nullcontext():
            features = _intermediate(self.model, images, self.block, self.normed)
        if self.norms_every_location:
            features = self.model.head.norm(features)
        if tuple(features.shape[-2:]) != grid:
            raise ValueError(f"{self.name}: block {self.block} gave a {tuple(features.shape[-2:])} grid, not {grid}")
        return features.contiguous()


def _norms_every_location(model: nn.Module, weights: WeightsSource, block: int, count: int) -> bool:
    """Whether the features are DINOv3's ConvNeXt's last stage, which its authors' dense output
    (`get_intermediate_layers(norm=True)`, `x_norm_patchtokens`) passes through the model's final LayerNorm at every
    location (earlier stages unnormed). timm keeps that norm as its classifier head's (`head.norm`, applied there to
    the pooled vector only), so its `forward_intermediates` leaves it out: up to 2.3 apart from the authors'
    features of a ConvNeXt-T on random weights. FB's ImageNet ConvNeXt normalizes only the pooled vector, and its
    dense features stay as timm gives them."""
    return (
        weights.dinov3
        and isinstance(model, ConvNeXt)
        and isinstance(model.norm_pre, nn.Identity)
        and isinstance(getattr(model.head, "norm", None), nn.Module)
        and block == count - 1
    )


def _intermediate(model: nn.Module, images: Tensor, block: int, normed: bool) -> Tensor:
    """timm's output of `block`, normed where `normed` (later blocks are not run: `stop_early` changes nothing
    else)."""
    return model.forward_intermediates(
        images,
        indices=[block],
        norm=normed,
        stop_early=True,
        output_fmt="NCHW",
        intermediates_only=True,
    )[-1]


@torch.inference_mode()
def _measure(
    name: str, model: nn.Module, block: int, reduction: int, normed: bool
) -> tuple[int, int, PatchTokens | None, int | None]:
    """(stride, channels) of the block's output, from one forward on a 4x4 grid (`feature_info` gives the trunk's
    channels, and a normed output can have others: SAM's neck maps 768 to 256), the patch embedding's tokens seen in
    the same forward, where they lie on the features' grid, and the one size the model runs at, where it fails on
    that grid and runs at the input size timm built it for (None where it runs at any)."""
    embedding = find_patch_embedding(model)
    seen: list[Tensor] = []
    handle = embedding[1].register_forward_hook(lambda _m, _i, tokens: seen.append(tokens)) if embedding else None
    side, fixed_size = 4 * reduction, None
    try:
        try:
            features = _intermediate(model, torch.zeros(1, 3, side, side, device=_device(model)), block, normed)
        except _SIZE_FAILURES as error:
            fixed_size = _built_size(model)
            seen.clear()
            larger = _larger_size_that_runs(model, block, normed, reduction, fixed_size, seen)
            if larger is not None:
                (side, features), fixed_size = larger, None
            elif fixed_size is None or fixed_size == side:
                raise UserError(
                    f"{name}: timm's {type(model).__name__} did not run on a {side} px image ({error})"
                ) from None
            else:
                side = fixed_size
                features = _only_at_built_size(name, model, block, normed, fixed_size, error)
    finally:
        if handle is not None:
            handle.remove()
    rows, cols = features.shape[-2:]
    if rows != cols or side % rows:
        raise UserError(f"{name}: a {side}x{side} image gave a {rows}x{cols} grid, not one of stride {reduction}")
    if fixed_size is None:
        _require_a_fixed_stride(name, model, block, normed, side, rows)
    patch_tokens = patch_tokens_of(*embedding, seen[0], (rows, cols)) if embedding and seen else None
    return side // rows, int(features.shape[1]), patch_tokens, fixed_size


def _larger_size_that_runs(
    model: nn.Module, block: int, normed: bool, reduction: int, built: int | None, seen: list[Tensor]
) -> tuple[int, Tensor] | None:
    """(size, output) of the first of 8 and 16 strides, below the size timm built the model for, that it runs on:
    a 4-stride image can be too small for a window of an early stage (SAM2's Hiera at stride 4 needs 8x8 tokens)
    in a model that runs at any size from there on. None where it runs on none of them. `seen` keeps the patch
    tokens of the forward that ran."""
    for side in (8 * reduction, 16 * reduction):
        if built is not None and side >= built:
            break
        try:
            return side, _intermediate(model, torch.zeros(1, 3, side, side, device=_device(model)), block, normed)
        except _SIZE_FAILURES:
            seen.clear()
    return None


def _require_a_fixed_stride(name: str, model: nn.Module, block: int, normed: bool, side: int, rows: int) -> None:
    """The grid of a model of unpadded convolutions (Inception) is not the image size over a stride: twice the image
    does not give twice the grid, and its features would not lie where isegprobe puts them over the pixels."""
    try:
        larger = _intermediate(model, torch.zeros(1, 3, 2 * side, 2 * side, device=_device(model)), block, normed)
    except _SIZE_FAILURES as error:
        raise UserError(
            f"{name}: timm's {type(model).__name__} ran on a {side} px image but not on a {2 * side} px one ({error})"
        ) from None
    if tuple(larger.shape[-2:]) != (2 * rows, 2 * rows):
        raise UserError(
            f"{name}: its features lie on no fixed stride (a {side} px image gave a {rows}x{rows} grid, a {2 * side} "
            f"px one {larger.shape[-2]}x{larger.shape[-1]}); isegprobe needs a grid of the image size over a stride"
        )


def _built_size(model: nn.Module) -> int | None:
    """The square input size timm built `model` for (its pretrained config's), None where it gives none."""
    size = (getattr(model, "pretrained_cfg", None) or {}).get("input_size")
    return int(size[-1]) if size and size[-1] == size[-2] else None


def _only_at_built_size(
    name: str, model: nn.Module, block: int, normed: bool, size: int, first_failure: Exception
) -> Tensor:
    """The block's output on a `size` px image, for a model that failed on a smaller one."""
    try:
        return _intermediate(model, torch.zeros(1, 3, size, size, device=_device(model)), block, normed)
    except _SIZE_FAILURES:
        raise UserError(
            f"{name}: timm's {type(model).__name__} runs neither on a small image ({first_failure}) nor at its own "
            f"{size} px"
        ) from None


def _near_sizes(size: int, stride: int) -> list[int]:
    """The multiples of `stride` up to two strides either side of `size`, which a refusal tries to name."""
    return [side for side in range(size - 2 * stride, size + 3 * stride, stride) if side > 0 and side != size]


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def late_fusion_only(model: nn.Module, stride: int) -> str:
    embedding = find_patch_embedding(model)
    reason = (
        f"its patch embedding ({embedding[0]}) gives no tokens on the grid of these features (stride {stride})"
        if embedding
        else f"timm's {type(model).__name__} has no patch embedding to add clicks to"
    )
    return f"supports late fusion only (fusion after_backbone or after_upsampler): {reason}"


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

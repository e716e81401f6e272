"""Click encoders: the 3-channel click input [B, 3, H, W] -> click tokens [B, dim, h, w] on a given grid.

`patch_embed` is SimpleClick's: one conv with kernel = stride = patch size. `simple_vit` lets clicks see each other
before fusion. `conv` keeps full resolution, for fusing after the upsampler. Each registers itself by name, so
`model.click_encoder.name` picks it and a new encoder is one class and one decorator.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from isegprobe.config import ClickEncoderConfig
from isegprobe.errors import UserError
from isegprobe.explicit_attention import products_scaled
from isegprobe.model.clicks import RESEARCH_CLICK_CHANNELS, in_click_channel_order
from isegprobe.registry import Registry

CLICK_CHANNELS = 3


class ClickEncoder(nn.Module):
    """`forward(click_input [B, 3, H, W], grid) -> [B, dim, *grid]`. `on_patch_grid`: the tokens belong on the
    featurizer's patch grid (fusion before or after the featurizer) rather than at the upsampled resolution.
    `click_channel_parameters`: the parameters that read the click channels, each with the dimension along which
    it holds them (3, or runs of 3 with the channel innermost)."""

    on_patch_grid: ClassVar[bool]
    click_channel_parameters: ClassVar[dict[str, int]]

    @classmethod
    def from_config(cls, config: ClickEncoderConfig, dim: int, patch_size: int) -> ClickEncoder:
        raise NotImplementedError

    def forward(self, click_input: Tensor, grid: tuple[int, int]) -> Tensor:
        raise NotImplementedError

    def in_research_order(self, click_input: Tensor, grid: tuple[int, int]) -> Tensor:
        """The same function of a click input stacked in the research code's order (`click_inputs(...,
        research_order=True)`): the parameters that read the click channels are taken in that order too, so that
        every sum over the channels runs in the research code's order and rounds as its sums do."""
        reordered = {
            name: in_click_channel_order(self.get_parameter(name), dim, RESEARCH_CLICK_CHANNELS)
            for name, dim in self.click_channel_parameters.items()
        }
        return torch.func.functional_call(self, reordered, (click_input, grid))


CLICK_ENCODERS: Registry[type[ClickEncoder]] = Registry("click encoder", where="model.click_encoder.name")


def register_click_encoder(name: str) -> Callable[[type[ClickEncoder]], type[ClickEncoder]]:
    """Decorate a `ClickEncoder` subclass to make it `model.click_encoder.name: <name>`."""
    return CLICK_ENCODERS.register(name)


def list_click_encoders() -> list[str]:
    return CLICK_ENCODERS.names()


def patch_grid_encoders() -> list[str]:
    """The encoders whose tokens sit on the patch grid, which fusion before or after the featurizer needs."""
    return [name for name in CLICK_ENCODERS.names() if CLICK_ENCODERS.get(name).on_patch_grid]


def create_click_encoder(config: ClickEncoderConfig, dim: int, patch_size: int) -> ClickEncoder:
    return CLICK_ENCODERS.get(config.name).from_config(config, dim, patch_size)


@register_click_encoder("patch_embed")
class PatchClickEncoder(ClickEncoder):
    on_patch_grid = True
    click_channel_parameters: ClassVar[dict[str, int]] = {"proj.weight": 1}

    def __init__(self, dim: int, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(CLICK_CHANNELS, dim, kernel_size=patch_size, stride=patch_size)

    @classmethod
    def from_config(cls, config: ClickEncoderConfig, dim: int, patch_size: int) -> PatchClickEncoder:
        return cls(dim, patch_size)

    def forward(self, click_input: Tensor, grid: tuple[int, int]) -> Tensor:
        return _to_grid(self.proj(click_input), grid)


def sincos_positions(height: int, width: int, dim: int) -> Tensor:
    """Fixed 2-D sin-cos positions [height*width, dim], as lucidrains' SimpleViT (and so iSegProbe) computes them:
    frequencies 10000**-(i / (dim/4 - 1)), channels ordered x.sin, x.cos, y.sin, y.cos."""
    quarter = dim // 4
    omega = 1.0 / (10000 ** (torch.arange(quarter, dtype=torch.float32) / max(quarter - 1, 1)))
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32), indexing="ij"
    )
    y_angles = ys.reshape(-1, 1) * omega
    x_angles = xs.reshape(-1, 1) * omega
    return torch.cat((x_angles.sin(), x_angles.cos(), y_angles.sin(), y_angles.cos()), dim=1)


class Patchify(nn.Module):
    """[B, C, h*p, w*p] -> [B, h*w, p*p*C], each patch flattened row by row with channels last (SimpleViT's order)."""

    def __init__(self, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size

    def forward(self, maps: Tensor) -> Tensor:
        batch, channels, height, width = maps.shape
        p = self.patch_size
        patches = maps.reshape(batch, channels, height // p, p, width // p, p)
        return patches.permute(0, 2, 4, 3, 5, 1).reshape(batch, (height // p) * (width // p), p * p * channels)


class SimpleViTAttention(nn.Module):
    """Pre-norm self-attention, heads x dim_head wide, without biases (SimpleViT's `Attention`). PyTorch's fused
    kernel, or under `research_precision` the product, softmax and product written out as SimpleViT writes them."""

    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = dim_head**-0.5
        self.norm = nn.LayerNorm(dim)
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_out = nn.Linear(heads * dim_head, dim, bias=False)
        self.research_precision = False

    def forward(self, tokens: Tensor) -> Tensor:
        query, key, value = (
            part.unflatten(-1, (self.heads, -1)).transpose(1, 2)
            for part in self.to_qkv(self.norm(tokens)).chunk(3, dim=-1)
        )
        if self.research_precision:
            attended = products_scaled(query, key, value, self.scale)
        else:
            attended = F.scaled_dot_product_attention(query, key, value)
        return self.to_out(attended.transpose(1, 2).flatten(2))


class SimpleViTFeedForward(nn.Module):
    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, dim))

    def forward(self, tokens: Tensor) -> Tensor:
        return self.net(tokens)


class SimpleViTTransformer(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, dim_head: int, mlp_dim: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList([SimpleViTAttention(dim, heads, dim_head), SimpleViTFeedForward(dim, mlp_dim)])
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: Tensor) -> Tensor:
        for attention, feed_forward in self.layers:
            tokens = attention(tokens) + tokens
            tokens = feed_forward(tokens) + tokens
        return self.norm(tokens)


@register_click_encoder("simple_vit")
class SimpleViTClickEncoder(ClickEncoder):
    """iSegProbe's `simple_vit` click encoder: lucidrains' SimpleViT over the click maps, layer for layer.

    Patches are layer-normed, projected and normed again; fixed sin-cos positions; pre-norm blocks whose attention
    is heads x dim_head wide (8 x 64 = 512 for a 384-d model) without biases; a final LayerNorm; no class token.
    Parameter names follow iSegProbe's module (`to_patch_embedding.*`, `transformer.layers.N.{0,1}.*`).
    """

    on_patch_grid = True
    click_channel_parameters: ClassVar[dict[str, int]] = {
        "to_patch_embedding.1.weight": 0,  # the flattened patches' LayerNorm
        "to_patch_embedding.1.bias": 0,
        "to_patch_embedding.2.weight": 1,
    }

    def __init__(
        self, dim: int, patch_size: int, depth: int = 6, heads: int = 8, mlp_dim: int = 2048, dim_head: int = 64
    ) -> None:
        super().__init__()
        if dim % 4:
            raise UserError(f"click encoder simple_vit: dim {dim} must be divisible by 4 (sin-cos positions)")
        patch_dim = CLICK_CHANNELS * patch_size * patch_size
        self.patch_size = patch_size
        self.to_patch_embedding = nn.Sequential(
            Patchify(patch_size), nn.LayerNorm(patch_dim), nn.Linear(patch_dim, dim), nn.LayerNorm(dim)
        )
        self.transformer = SimpleViTTransformer(dim, depth, heads, dim_head, mlp_dim)

    @classmethod
    def from_config(cls, config: ClickEncoderConfig, dim: int, patch_size: int) -> SimpleViTClickEncoder:
        return cls(dim, patch_size, config.depth, config.heads, config.mlp_dim, config.dim_head)

    def forward(self, click_input: Tensor, grid: tuple[int, int]) -> Tensor:
        height, width = (side // self.patch_size for side in click_input.shape[-2:])
        tokens = self.to_patch_embedding(click_input)
        positions = sincos_positions(height, width, tokens.shape[-1]).to(device=tokens.device, dtype=tokens.dtype)
        tokens = self.transformer(tokens + positions)
        return _to_grid(tokens.transpose(1, 2).unflatten(-1, (height, width)), grid)


@register_click_encoder("conv")
class ConvClickEncoder(ClickEncoder):
    """Two 3x3 convs applied on the target grid itself, so thin disks survive at high resolution."""

    on_patch_grid = False
    click_channel_parameters: ClassVar[dict[str, int]] = {"layers.0.weight": 1}

    def __init__(self, dim: int, hidden: int = 32) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(CLICK_CHANNELS, hidden, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, dim, kernel_size=3, padding=1),
        )

    @classmethod
    def from_config(cls, config: ClickEncoderConfig, dim: int, patch_size: int) -> ConvClickEncoder:
        return cls(dim)

    def forward(self, click_input: Tensor, grid: tuple[int, int]) -> Tensor:
        if tuple(click_input.shape[-2:]) != tuple(grid):
            click_input = F.adaptive_max_pool2d(click_input, grid)
        return self.layers(click_input)


def _to_grid(tokens: Tensor, grid: tuple[int, int]) -> Tensor:
    if tuple(tokens.shape[-2:]) == tuple(grid):
        return tokens
    return F.interpolate(tokens, size=grid, mode="bilinear", align_corners=False)

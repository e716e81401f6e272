"""JAFAR (Couairon et al., 2025): attention from image pixels to low-res features, at any output resolution.

An image encoder (1x1 convs + RoPE) gives queries, pooled to the output grid, and keys, pooled to the feature grid;
the keys are modulated by the L2-normalized features through a spatial feature transform (SFT: a per-cell scale and
shift predicted from the features). Every output pixel attends to every feature cell with head-averaged weights and
takes their weighted mean of the raw features, so the output stays in the input's feature space. The attention runs
in bands of output rows: the same result as the authors' full attention, in bounded memory.

Input contract, as the authors train and evaluate it: the image normalized with the featurizer's own mean and std (the
image the featurizer saw, which is what the probe passes as guidance), features straight from the featurizer.

Weights: the files of the PaulCouairon/JAFAR releases (`vit_small_patch14_dinov2.lvd142m.pth` and the other
backbones'), `{"jafar": state_dict}` of the authors' `JAFAR` module with their defaults (qk dim 128, 4 heads, 1x1
image encoder), `v_dim` the feature dim.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from isegprobe.state_dicts import load_strictly, read_state_dict
from isegprobe.upsamplers.layers import MultiheadProjections, RoPE
from isegprobe.upsamplers.learned import LearnedUpsampler, with_weights
from isegprobe.upsamplers.registry import register_upsampler

QK_DIM = 128
NUM_HEADS = 4
GROUPS = 8
ATTENTION_BUDGET = 1 << 24  # attention logits per band of output rows (64 MB in float32)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-1x1 conv, twice, plus the identity, under JAFAR's names (`norm1`, `conv1`, `norm2`, `conv2`)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(GROUPS, channels)
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=1, bias=False)
        self.norm2 = nn.GroupNorm(GROUPS, channels)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        hidden = self.conv1(F.silu(self.norm1(x)))
        return self.conv2(F.silu(self.norm2(hidden))) + x


def encoder(in_channels: int) -> nn.Sequential:
    """A 1x1 projection to the qk width and two residual blocks: JAFAR's image, query, key and feature encoders."""
    return nn.Sequential(nn.Conv2d(in_channels, QK_DIM, kernel_size=1, bias=False), ResBlock(QK_DIM), ResBlock(QK_DIM))


class SpatialFeatureTransform(nn.Module):
    """Group-normalized keys scaled and shifted per cell by 1x1 convs of the conditioning features (JAFAR's SFT)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gamma = nn.Conv2d(channels, channels, kernel_size=1, bias=False)
        self.beta = nn.Conv2d(channels, channels, kernel_size=1, bias=False)
        self.norm = nn.GroupNorm(GROUPS, channels, affine=False)

    def forward(self, keys: Tensor, conditioning: Tensor) -> Tensor:
        return self.gamma(conditioning) * self.norm(keys) + self.beta(conditioning)


class CrossAttention(nn.Module):
    """RMS-normed queries and keys, `nn.MultiheadAttention`'s projections with values of the feature width.

    Only the head-averaged weights are used: the authors' module also normalizes and projects the values
    (`norm_v`, `v_proj_weight`, `out_proj`), whose result it discards; those weights are in its files, unused.
    """

    def __init__(self, dim: int, value_dim: int, heads: int) -> None:
        super().__init__()
        self.norm_q = nn.RMSNorm(dim)
        self.norm_k = nn.RMSNorm(dim)
        self.norm_v = nn.RMSNorm(value_dim)
        self.attention = MultiheadProjections(dim, heads, value_dim)

    def weights(self, queries: Tensor, keys: Tensor) -> Tensor:
        """[B, Nq, E] queries, [B, h, Nk, E/h] projected keys -> head-averaged weights [B, Nq, Nk]."""
        query_heads = self.attention.heads(self.norm_q(queries), 0)
        scale = query_heads.shape[-1] ** -0.5
        return ((query_heads * scale) @ keys.transpose(-2, -1)).softmax(dim=-1).mean(dim=1)


class CrossAttentionBlock(nn.Module):
    """A 3x3 conv over the queries, then attention whose weights average the raw features."""

    def __init__(self, dim: int, value_dim: int, heads: int) -> None:
        super().__init__()
        self.cross_attn = CrossAttention(dim, value_dim, heads)
        self.conv2d = nn.Conv2d(dim, dim, kernel_size=3, stride=1, padding=1, bias=False)

    def forward(self, queries: Tensor, keys: Tensor, values: Tensor, rows_per_band: int | None = None) -> Tensor:
        """queries [B, E, H, W], keys [B, E, h, w], values [B, C, h, w] -> [B, C, H, W].

        `rows_per_band` output rows are attended at a time (None: as many as ATTENTION_BUDGET allows).
        """
        queries = self.conv2d(queries)
        batch, _, height, width = queries.shape
        key_heads = self.cross_attn.attention.heads(self.cross_attn.norm_k(keys.flatten(2).transpose(1, 2)), 1)
        value_tokens = values.flatten(2).transpose(1, 2)
        if rows_per_band is None:
            logits_per_row = self.cross_attn.attention.num_heads * width * keys[0, 0].numel()
            rows_per_band = max(1, ATTENTION_BUDGET // logits_per_row)
        bands = []
        for start in range(0, height, rows_per_band):
            band_queries = queries[:, :, start : start + rows_per_band].flatten(2).transpose(1, 2)
            bands.append(self.cross_attn.weights(band_queries, key_heads) @ value_tokens)
        return torch.cat(bands, dim=1).transpose(1, 2).reshape(batch, -1, height, width)


class JAFAR(LearnedUpsampler):
    """JAFAR with the released checkpoints' settings (qk dim 128, 4 heads, 1x1 image encoder) for `dim` features."""

    def __init__(self, dim: int, rows_per_band: int | None = None) -> None:
        super().__init__()
        self.rows_per_band = rows_per_band
        self.image_encoder = encoder(3)
        self.key_encoder = encoder(QK_DIM)
        self.query_encoder = encoder(QK_DIM)
        self.norm = nn.GroupNorm(GROUPS, QK_DIM, affine=False)
        self.key_features_encoder = encoder(dim)
        self.cross_decode = CrossAttentionBlock(QK_DIM, dim, NUM_HEADS)
        self.sft_key = SpatialFeatureTransform(QK_DIM)
        self.rope = RoPE(QK_DIM)

    def forward(self, features: Tensor, guidance: Tensor, output_size: tuple[int, int] | None = None) -> Tensor:
        """features [B, C, h, w], guidance [B, 3, H, W] -> [B, C, *output_size] (None: the guidance's H, W).

        Any output size works, smaller or larger than the image: the authors' module pools its queries to it.
        """
        size = tuple(guidance.shape[-2:]) if output_size is None else tuple(output_size)
        encoded = self.image_encoder(guidance)
        batch, channels, height, width = encoded.shape
        tokens = self.rope(encoded.flatten(2).transpose(1, 2), height, width)
        encoded = tokens.transpose(1, 2).reshape(batch, channels, height, width)
        queries = self.norm(F.adaptive_avg_pool2d(self.query_encoder(encoded), size))
        keys = F.adaptive_avg_pool2d(self.key_encoder(encoded), features.shape[-2:])
        keys = self.sft_key(keys, self.key_features_encoder(F.normalize(features, dim=1)))
        return self.cross_decode(queries, keys, features, self.rows_per_band)

    def load_checkpoint(self, path: Path) -> None:
        state = read_state_dict(path, wrappers=("jafar",))
        load_strictly(self, state, f"{path} is not a JAFAR checkpoint for this feature dim")


@register_upsampler("jafar")
def create_jafar(dim: int, weights: str | None = None) -> JAFAR:
    """`dim` is the authors' `v_dim`: each release file is for one featurizer's width and loads only at it."""
    return with_weights(JAFAR(dim), weights)

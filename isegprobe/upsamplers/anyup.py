"""AnyUp (Wimmer et al., ICLR 2026): feature-agnostic window attention from image pixels to low-res features.

An image encoder (1x1 convs + RoPE) gives queries at the output grid and keys pooled to the feature grid; the keys
also see the features through a learned feature unification (any channel count maps to 128). Each output pixel
attends, with head-averaged weights, to the features inside a window around it (10 % of the image each way) and
takes their weighted mean, so the output stays in the input's feature space and the same weights serve any featurizer.
Attention runs in bands of output rows, each against only the feature rows its windows reach: the same result as
AnyUp's masked full attention, in bounded memory.

Weights: the authors' bare state dicts, `anyup_paper.pth` (trained on DINOv2 ViT-S/14) and
`anyup_multi_backbone.pth`, for the standard (non-NATTEN) attention they were trained with.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from isegprobe.devices import from_host
from isegprobe.state_dicts import load_strictly, read_state_dict
from isegprobe.upsamplers.layers import MultiheadProjections, RoPE
from isegprobe.upsamplers.learned import LearnedUpsampler, with_weights
from isegprobe.upsamplers.registry import register_upsampler

QK_DIM = 128
NUM_HEADS = 4
LFU_KERNEL = 5
WINDOW_RATIO = 0.1
ATTENTION_BUDGET = 1 << 24  # attention logits per band of output rows (64 MB in float32)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-1x1 conv, twice, plus the identity (AnyUp's ResBlock as every AnyUp encoder uses it)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.GroupNorm(8, channels),
            nn.SiLU(),
            nn.Conv2d(channels, channels, kernel_size=1, bias=False),
            nn.GroupNorm(8, channels),
            nn.SiLU(),
            nn.Conv2d(channels, channels, kernel_size=1, bias=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x) + x


def encoder(first: nn.Module) -> nn.Sequential:
    return nn.Sequential(first, ResBlock(QK_DIM), ResBlock(QK_DIM))


def projection(in_channels: int, kernel_size: int) -> nn.Conv2d:
    padding = kernel_size // 2
    return nn.Conv2d(in_channels, QK_DIM, kernel_size, padding=padding, padding_mode="reflect", bias=False)


class LearnedFeatureUnification(nn.Module):
    """Any number of feature channels -> `out_channels`: a softmax over learned depthwise-conv responses.

    The responses are viewed as [out, C] although the grouped conv lays them out as [C, out]; that reinterpretation
    is the authors' and their weights depend on it.
    """

    def __init__(self, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.basis = nn.Parameter(torch.randn(out_channels, 1, kernel_size, kernel_size))

    def forward(self, features: Tensor) -> Tensor:
        batch, channels, height, width = features.shape
        pad = self.kernel_size // 2
        responses = F.conv2d(F.pad(features, [pad] * 4), self.basis.repeat(channels, 1, 1, 1), groups=channels)
        ones = features.new_ones(1, 1, height, width)
        window = features.new_ones(1, 1, self.kernel_size, self.kernel_size)
        valid_taps = F.conv2d(F.pad(ones, [pad] * 4), window)
        responses = (responses / valid_taps).view(batch, self.out_channels, channels, height, width)
        return F.softmax(responses, dim=1).mean(dim=2)


def window_bounds(out_size: int, in_size: int, ratio: float) -> tuple[Tensor, Tensor]:
    """For each output row (or column): the first and one-past-last feature row its attention window covers."""
    centres = (torch.arange(out_size, dtype=torch.float32) + 0.5) / out_size
    low = ((centres - ratio).clamp(0.0, 1.0) * in_size).floor().long()
    high = ((centres + ratio).clamp(0.0, 1.0) * in_size).ceil().long()
    return low, high


class WindowMask:
    """Which feature cells each output pixel may attend to: those within `ratio` of the image each way.

    Small index tensors kept on the CPU, so slicing the keys by them never waits for an accelerator; each band's
    mask goes to the device by `from_host`, which does not wait either.
    """

    def __init__(self, out_size: tuple[int, int], grid: tuple[int, int], ratio: float) -> None:
        self.grid_width = grid[1]
        self.row_low, self.row_high = window_bounds(out_size[0], grid[0], ratio)
        col_low, col_high = window_bounds(out_size[1], grid[1], ratio)
        cols = torch.arange(grid[1])
        self.cols_allowed = (cols >= col_low[:, None]) & (cols < col_high[:, None])

    def band(self, start: int, stop: int) -> tuple[int, int, Tensor]:
        """Output rows [start, stop): the feature rows [first, last) they reach and the bool mask, queries x cells."""
        low, high = self.row_low[start:stop, None], self.row_high[start:stop, None]
        first, last = int(low.min()), int(high.max())
        rows = torch.arange(first, last)
        rows_allowed = (rows >= low) & (rows < high)
        allowed = rows_allowed[:, None, :, None] & self.cols_allowed[None, :, None, :]
        return first, last, allowed.reshape(-1, (last - first) * self.grid_width)


class CrossAttention(nn.Module):
    """RMS-normed queries and keys, `nn.MultiheadAttention`'s projections; only its head-averaged weights are used."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm_q = nn.RMSNorm(dim)
        self.norm_k = nn.RMSNorm(dim)
        self.attention = MultiheadProjections(dim, heads)

    def weights(self, queries: Tensor, keys: Tensor, allowed: Tensor) -> Tensor:
        """[B, Nq, E] queries, [B, h, Nk, E/h] projected keys, bool [Nq, Nk] -> head-averaged weights [B, Nq, Nk]."""
        query_heads = self.attention.heads(self.norm_q(queries), 0)
        scale = query_heads.shape[-1] ** -0.5
        logits = (query_heads * scale) @ keys.transpose(-2, -1)
        return logits.masked_fill(~allowed, float("-inf")).softmax(dim=-1).mean(dim=1)


class CrossAttentionBlock(nn.Module):
    """A 3x3 conv over the queries, then window attention whose weights average the raw features."""

    def __init__(self, dim: int, heads: int, window_ratio: float) -> None:
        super().__init__()
        self.cross_attn = CrossAttention(dim, heads)
        self.window_ratio = window_ratio
        self.conv2d = nn.Conv2d(dim, dim, kernel_size=3, stride=1, padding=1, bias=False)

    def forward(self, queries: Tensor, keys: Tensor, values: Tensor, rows_per_band: int | None = None) -> Tensor:
        """queries [B, E, H, W], keys [B, E, h, w], values [B, C, h, w] -> [B, C, H, W].

        `rows_per_band` output rows are attended at a time (None: as many as ATTENTION_BUDGET allows).
        """
        queries = self.conv2d(queries)
        batch, _, height, width = queries.shape
        key_width = keys.shape[-1]
        key_heads = self.cross_attn.attention.heads(self.cross_attn.norm_k(keys.flatten(2).transpose(1, 2)), 1)
        value_tokens = values.flatten(2).transpose(1, 2)
        windows = WindowMask((height, width), tuple(keys.shape[-2:]), self.window_ratio)
        if rows_per_band is None:
            logits_per_row = self.cross_attn.attention.num_heads * width * keys[0, 0].numel()
            rows_per_band = max(1, ATTENTION_BUDGET // logits_per_row)
        bands = []
        for start in range(0, height, rows_per_band):
            stop = min(start + rows_per_band, height)
            first, last, allowed = windows.band(start, stop)
            reached = slice(first * key_width, last * key_width)
            band_queries = queries[:, :, start:stop].flatten(2).transpose(1, 2)
            allowed = from_host(allowed, queries.device)
            weights = self.cross_attn.weights(band_queries, key_heads[:, :, reached], allowed)
            bands.append(weights @ value_tokens[:, reached])
        return torch.cat(bands, dim=1).transpose(1, 2).reshape(batch, -1, height, width)


class AnyUp(LearnedUpsampler):
    """AnyUp with the paper's settings (qk dim 128, 4 heads, 5x5 unification basis, window ratio 0.1)."""

    guidance_statistics = "imagenet"  # its README asks for ImageNet-normalized images, whatever the backbone

    def __init__(self, rows_per_band: int | None = None) -> None:
        super().__init__()
        self.rows_per_band = rows_per_band
        self.image_encoder = encoder(projection(3, 1))
        self.key_encoder = encoder(projection(QK_DIM, 1))
        self.query_encoder = encoder(projection(QK_DIM, 1))
        self.key_features_encoder = encoder(LearnedFeatureUnification(QK_DIM, LFU_KERNEL))
        self.cross_decode = CrossAttentionBlock(QK_DIM, NUM_HEADS, WINDOW_RATIO)
        self.aggregation = encoder(projection(2 * QK_DIM, 3))
        self.rope = RoPE(QK_DIM)

    def forward(self, features: Tensor, guidance: Tensor) -> Tensor:
        encoded = self.image_encoder(guidance)
        batch, channels, height, width = encoded.shape
        tokens = self.rope(encoded.flatten(2).transpose(1, 2), height, width)
        encoded = tokens.transpose(1, 2).reshape(batch, channels, height, width)
        queries = F.adaptive_avg_pool2d(self.query_encoder(encoded), guidance.shape[-2:])
        keys = F.adaptive_avg_pool2d(self.key_encoder(encoded), features.shape[-2:])
        keys = self.aggregation(torch.cat([keys, self.key_features_encoder(F.normalize(features, dim=1))], dim=1))
        return self.cross_decode(queries, keys, features, self.rows_per_band)

    def load_checkpoint(self, path: Path) -> None:
        load_strictly(self, read_state_dict(path), f"{path} is not a AnyUp checkpoint for this feature dim")


@register_upsampler("anyup")
def create_anyup(dim: int, weights: str | None = None) -> AnyUp:
    """AnyUp works on features of any width, so `dim` does not change the model."""
    return with_weights(AnyUp(), weights)

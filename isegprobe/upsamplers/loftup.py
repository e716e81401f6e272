"""LoftUp (Huang et al., ICCV 2025): a coordinate-based upsampler; every output pixel is a query.

Queries come from Fourier features of (x, y, RGB) at the guidance resolution through a conv stem; keys and values are
the ChannelNorm-ed low-resolution features with a sine position encoding; two cross-attention blocks and a 1x1
projection + LayerNorm give features at the guidance image's size, whatever it is. Everything after the stem works
per query, so queries are processed in chunks: memory stays bounded (32x32 -> 448x448 at dim 384 in well under 4 GB on
CPU) and the result is the same as attending all queries at once. Under `research_precision` they are attended all at
once, as the authors' forward does, and take the memory it takes.

Weights: the authors' files load strictly, either the Hugging Face `pytorch_model.bin` (haiwen/loftup-dinov2s etc.:
`channelnorm.*`, `upsampler.*`) or the Lightning `.ckpt` (`model.1.norm.*`, `upsampler.*`, plus a backbone and
training-only modules, which are skipped).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from isegprobe.explicit_attention import queries_scaled_first
from isegprobe.state_dicts import load_strictly, read_state_dict
from isegprobe.upsamplers.checkpoints import NORM_AND_UPSAMPLER, rename_prefixes
from isegprobe.upsamplers.layers import ChannelNorm, MultiheadProjections
from isegprobe.upsamplers.learned import LearnedUpsampler, with_weights
from isegprobe.upsamplers.registry import register_upsampler

IMAGE_FREQUENCIES = 20
POSITION_FREQUENCIES = 5
NUM_HEADS = 4
NUM_LAYERS = 2
QUERY_CHUNK_SIZE = 8192


class MinMaxScaler(nn.Module):
    """Each channel scaled to [-0.5, 0.5] by its min and max.

    The authors pool the min and max over the whole batch, so an image's output depends on the other images in its
    batch. That is kept in training mode, where the weights were trained that way; in eval mode each image is
    scaled by its own statistics, so that an object's result does not depend on which objects share its forward
    (the research code evaluates an image with its mirror, which has the same statistics).
    """

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            flat = x.transpose(0, 1).flatten(1)[None]
        else:
            flat = x.flatten(2)
        low = flat.min(dim=-1).values[..., None, None]
        span = flat.max(dim=-1).values[..., None, None] - low
        return (x - low) / span.clamp_min(1e-4) - 0.5


class FourierFeatures(nn.Module):
    """sin/cos of (y, x[, RGB]) at exponentially spaced frequencies, learned phases (the authors' ImplicitFeaturizer).

    The grid spans [-1, 1] over the input's own size, so the low-res position encoding depends on the feature grid.
    """

    def __init__(self, n_freqs: int, with_color: bool) -> None:
        super().__init__()
        self.n_freqs = n_freqs
        self.with_color = with_color
        self.inputs = 5 if with_color else 2
        self.biases = nn.Parameter(torch.randn(2, self.inputs, n_freqs))

    def forward(self, x: Tensor) -> Tensor:
        batch, _, height, width = x.shape
        grid_y = torch.linspace(-1, 1, height, device=x.device, dtype=x.dtype)
        grid_x = torch.linspace(-1, 1, width, device=x.device, dtype=x.dtype)
        grid = torch.stack(torch.meshgrid(grid_y, grid_x, indexing="ij")).expand(batch, 2, height, width)
        inputs = torch.cat([grid, x], dim=1) if self.with_color else grid
        freqs = torch.exp(torch.linspace(-2, 10, self.n_freqs, device=x.device, dtype=x.dtype))
        scaled = inputs.unsqueeze(1) * freqs.reshape(1, self.n_freqs, 1, 1, 1)
        # the authors reshape (not transpose) the [inputs, n_freqs] phases to [n_freqs, inputs]: kept for their weights
        phases = self.biases.reshape(2, 1, self.n_freqs, self.inputs, 1, 1)
        sin = torch.sin(scaled + phases[0]).flatten(1, 2)
        cos = torch.cos(scaled + phases[1]).flatten(1, 2)
        return torch.cat([sin, cos, x], dim=1) if self.with_color else torch.cat([sin, cos], dim=1)


class ChannelsFirstLayerNorm(nn.Module):
    """LayerNorm over dim 1 of [B, C, ...] with eps 1e-6 (the authors' `LayerNorm`, ConvNeXt style). The authors
    write its mean and variance out; under `research_precision` it is computed so, otherwise by PyTorch's kernel."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.research_precision = False

    def normalize_tokens(self, tokens: Tensor) -> Tensor:
        """The same normalization for [..., C] tokens."""
        return F.layer_norm(tokens, self.weight.shape, self.weight, self.bias, eps=1e-6)

    def forward(self, x: Tensor) -> Tensor:
        if self.research_precision:
            mean = x.mean(1, keepdim=True)
            variance = (x - mean).pow(2).mean(1, keepdim=True)
            normalized = (x - mean) / torch.sqrt(variance + 1e-6)
            return self.weight[:, None, None] * normalized + self.bias[:, None, None]
        return self.normalize_tokens(x.movedim(1, -1)).movedim(-1, 1)


class CrossAttentionLayer(nn.Module):
    """Pre-norm multi-head cross-attention; keys and values are both the normed low-res tokens.

    The authors call `nn.MultiheadAttention` (sequence first) with its default `need_weights=True`, which writes the
    attention out: softmax((q * sqrt(1 / head_dim)) @ k^T) @ v. Under `research_precision` it is computed so, the
    projections taken over the sequence-first view as it takes them; otherwise PyTorch's fused kernel gives the same
    function, rounded otherwise."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.attention = MultiheadProjections(dim, heads)
        self.research_precision = False

    def keys_values(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        """Projected keys and values of the [B, N, E] low-res tokens, computed once for all query chunks."""
        normed = self.norm_kv(memory)
        sequence_first = self.research_precision
        return self.attention.heads(normed, 1, sequence_first), self.attention.heads(normed, 2, sequence_first)

    def forward(self, queries: Tensor, keys: Tensor, values: Tensor) -> Tensor:
        heads = self.attention.heads(self.norm_q(queries), 0, self.research_precision)
        if self.research_precision:
            attended = queries_scaled_first(heads, keys, values, math.sqrt(1.0 / heads.shape[-1]))
        else:
            attended = F.scaled_dot_product_attention(heads, keys, values)
        return self.attention.merge(attended)


class FeedForward(nn.Module):
    """Pre-norm MLP; the zero-rate dropouts keep the authors' layer indices (`net.1`, `net.4`)."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(dim),
            nn.Linear(dim, hidden_dim),
            nn.GELU(),
            nn.Dropout(0.0),
            nn.Linear(hidden_dim, dim),
            nn.Dropout(0.0),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class CATransformer(nn.Module):
    """Residual cross-attention + feed-forward blocks over the queries, then a final LayerNorm."""

    def __init__(self, dim: int, depth: int, heads: int, mlp_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.layers = nn.ModuleList(
            nn.ModuleList([CrossAttentionLayer(dim, heads), FeedForward(dim, mlp_dim)]) for _ in range(depth)
        )

    def keys_values(self, memory: Tensor) -> list[tuple[Tensor, Tensor]]:
        return [attention.keys_values(memory) for attention, _ in self.layers]

    def forward(self, queries: Tensor, keys_values: list[tuple[Tensor, Tensor]]) -> Tensor:
        for (attention, feed_forward), (keys, values) in zip(self.layers, keys_values, strict=True):
            queries = attention(queries, keys, values) + queries
            queries = feed_forward(queries) + queries
        return self.norm(queries)


class LoftUpNetwork(nn.Module):
    """The authors' `LoftUp` with the sine low-res position encoding (the released models)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        position_dim = 2 * POSITION_FREQUENCIES * 2
        width = dim + position_dim
        stem_dim = 5 * IMAGE_FREQUENCIES * 2 + 3
        self.lr_pe = FourierFeatures(POSITION_FREQUENCIES, with_color=False)
        self.fourier_feat = nn.Sequential(MinMaxScaler(), FourierFeatures(IMAGE_FREQUENCIES, with_color=True))
        self.first_conv = nn.Sequential(
            ChannelNorm(stem_dim),
            nn.Conv2d(stem_dim, width, kernel_size=3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, kernel_size=3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        self.final_conv = nn.Sequential(nn.Conv2d(width, dim, kernel_size=1), ChannelsFirstLayerNorm(dim))
        self.ca_transformer = CATransformer(width, depth=NUM_LAYERS, heads=NUM_HEADS, mlp_dim=dim)
        self.research_precision = False

    def forward(self, features: Tensor, guidance: Tensor, query_chunk_size: int | None = None) -> Tensor:
        """features [B, C, h, w] (already ChannelNorm-ed), guidance [B, 3, H, W] -> [B, C, H, W].

        `query_chunk_size` queries go through the transformer at a time (None: all at once). Under
        `research_precision` all of them go at once and `final_conv` runs on the map, as in the authors' forward.
        """
        stem = self.first_conv(self.fourier_feat(guidance))
        batch, _, height, width = stem.shape
        memory = torch.cat([features, self.lr_pe(features)], dim=1).flatten(2).transpose(1, 2)
        keys_values = self.ca_transformer.keys_values(memory)
        queries = stem.flatten(2).transpose(1, 2)
        if self.research_precision:
            tokens = self.ca_transformer(queries, keys_values)
            return self.final_conv(tokens.transpose(1, 2).reshape(batch, -1, height, width))
        step = queries.shape[1] if query_chunk_size is None else query_chunk_size
        outputs = [
            self.project(self.ca_transformer(queries[:, start : start + step], keys_values))
            for start in range(0, queries.shape[1], step)
        ]
        return torch.cat(outputs, dim=1).transpose(1, 2).reshape(batch, -1, height, width)

    def project(self, tokens: Tensor) -> Tensor:
        """`final_conv` (1x1 conv + LayerNorm) applied to [B, N, E] tokens."""
        conv, norm = self.final_conv
        return norm.normalize_tokens(F.linear(tokens, conv.weight.flatten(1), conv.bias))


class LoftUp(LearnedUpsampler):
    """ChannelNorm then LoftUp, as the authors' `UpsamplerwithChannelNorm`; output at the guidance image's size."""

    def __init__(self, dim: int, query_chunk_size: int | None = QUERY_CHUNK_SIZE) -> None:
        super().__init__()
        self.query_chunk_size = query_chunk_size
        self.channelnorm = ChannelNorm(dim)
        self.upsampler = LoftUpNetwork(dim)

    def forward(self, features: Tensor, guidance: Tensor) -> Tensor:
        return self.upsampler(self.channelnorm(features), guidance, self.query_chunk_size)

    def load_checkpoint(self, path: Path) -> None:
        state = rename_prefixes(read_state_dict(path), NORM_AND_UPSAMPLER)
        load_strictly(self, state, f"{path} is not a LoftUp checkpoint for this feature dim")


@register_upsampler("loftup")
def create_loftup(dim: int, weights: str | None = None) -> LoftUp:
    return with_weights(LoftUp(dim), weights)

"""FeatUp's JBU stack (Fu et al., ICLR 2024): four learned joint-bilateral 2x steps, in pure PyTorch.

Each step upsamples the features bicubically to the (pooled) guidance grid and re-weights every 7x7 neighbourhood by
a kernel: a learned-sigma spatial Gaussian times a softmax range kernel over a projection of the guidance, normalized
and corrected by a small "fixup" net. FeatUp sums that neighbourhood with a compiled CUDA/C++ extension; here the same
sum is 49 shifted multiply-adds on the padded map, which runs on any device, is differentiable, and never holds the
49 unfolded copies an `unfold` would.

Weights: FeatUp's Lightning checkpoints as served by its torch hub entry points (`dinov2` ->
`dinov2_jbu_stack_cocostuff.ckpt`): `upsampler.*`, and the ChannelNorm `model.1.norm.*` the upsampler was trained
behind; the backbone and training-only modules in the file are skipped.

Two ways to run them, both legitimate, so both by name: `featup_jbu` is FeatUp's hub model (ChannelNorm, then the
stack); `featup_jbu_stack` is the stack alone, fed the featurizer's features as they are, which is what the iSegProbe
research code runs (its `JBUFeatUp` keeps only the hub model's `.upsampler`).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from isegprobe.errors import UserError
from isegprobe.state_dicts import load_strictly, read_state_dict
from isegprobe.upsamplers.checkpoints import NORM_AND_UPSAMPLER, rename_prefixes
from isegprobe.upsamplers.layers import ChannelNorm, resize_to
from isegprobe.upsamplers.learned import LearnedUpsampler, with_weights
from isegprobe.upsamplers.registry import register_upsampler

RADIUS = 3
KEY_DIM = 32
GUIDANCE_DIM = 3


def shifted_windows(padded: Tensor, height: int, width: int, diameter: int) -> list[Tensor]:
    """The diameter**2 views of `padded` [..., height + 2r, width + 2r] at each offset of the window, row-major."""
    return [padded[..., i : i + height, j : j + width] for i in range(diameter) for j in range(diameter)]


def adaptive_conv(padded_source: Tensor, kernel: Tensor, contiguous: bool = False) -> Tensor:
    """sum_k kernel[b, k, y, x] * source[b, c, y + k // d, x + k % d]: FeatUp's AdaptiveConv, unfold-free.

    One fused multiply-add per tap (`addcmul_`), row-major over the window, from the first product: the rounding of
    FeatUp's CUDA kernel, whose `output_val += weight * input_val` nvcc contracts. With value 1, ATen's `addcmul`
    calls `std::fma`, on a CPU and on CUDA alike (the tests check the CPU's against the chain emulated in float64).

    padded_source [B, C, H + d - 1, W + d - 1], kernel [B, d*d, H, W] -> [B, C, H, W], in the source's memory layout,
    or contiguous (NCHW) with `contiguous`, as FeatUp's extension returns it whatever the source's layout: the values
    are the same, but the layers after the upsampler (the resize to the image, the head's convolutions) round by it.
    """
    height, width = kernel.shape[-2:]
    diameter = padded_source.shape[-1] - width + 1
    windows = shifted_windows(padded_source, height, width, diameter)
    out = windows[0] * kernel[:, :1]
    if contiguous:
        out = out.contiguous()
    for index, window in enumerate(windows[1:], start=1):
        out = out.addcmul_(window, kernel[:, index : index + 1])
    return out


class JBULearnedRange(nn.Module):
    """One 2x joint-bilateral step (FeatUp's `JBULearnedRange`, radius 3, key dim 32)."""

    def __init__(self, guidance_dim: int = GUIDANCE_DIM, key_dim: int = KEY_DIM, radius: int = RADIUS) -> None:
        super().__init__()
        self.radius = radius
        self.diameter = 2 * radius + 1
        taps = self.diameter**2
        self.range_temp = nn.Parameter(torch.tensor(0.0))
        self.range_proj = nn.Sequential(
            nn.Conv2d(guidance_dim, key_dim, 1), nn.GELU(), nn.Dropout2d(0.1), nn.Conv2d(key_dim, key_dim, 1)
        )
        self.fixup_proj = nn.Sequential(
            nn.Conv2d(guidance_dim + taps, taps, 1), nn.GELU(), nn.Dropout2d(0.1), nn.Conv2d(taps, taps, 1)
        )
        self.sigma_spatial = nn.Parameter(torch.tensor(1.0))
        self.research_precision = False

    def range_kernel(self, guidance: Tensor) -> Tensor:
        """Softmax over the window of the (temperature-scaled) similarity between projected guidance pixels."""
        keys = self.range_proj(guidance)
        padded = F.pad(keys, [self.radius] * 4, mode="reflect")
        if self.research_precision:
            similarity = self._unfolded_similarity(padded, keys)
        else:
            windows = shifted_windows(padded, keys.shape[-2], keys.shape[-1], self.diameter)
            similarity = torch.stack([torch.linalg.vecdot(window, keys, dim=1) for window in windows], dim=1)
        temperature = self.range_temp.exp().clamp(1e-4, 1e4)
        return F.softmax(temperature * similarity, dim=1)

    def _unfolded_similarity(self, padded: Tensor, keys: Tensor) -> Tensor:
        """The similarity as FeatUp computes it: every window unfolded, then one einsum, which runs as a batched
        matrix product and so sums the key channels in another order than `vecdot` (3.8e-6 apart at 112 px). It
        holds the 49 unfolded copies of the keys, about 315 MB per 224 px image."""
        batch, channels, height, width = keys.shape
        windows = F.unfold(padded, self.diameter).reshape(batch, channels, self.diameter**2, height, width)
        return torch.einsum("bchwp,bchw->bphw", windows.permute(0, 1, 3, 4, 2), keys)

    def spatial_kernel(self) -> Tensor:
        offsets = torch.linspace(-1, 1, self.diameter, device=self.sigma_spatial.device)
        squared_distance = offsets.square()[:, None] + offsets.square()[None, :]
        gaussian = torch.exp(-squared_distance / (2 * self.sigma_spatial**2))
        return gaussian.reshape(1, self.diameter**2, 1, 1)

    def forward(self, source: Tensor, guidance: Tensor) -> Tensor:
        kernel = self.range_kernel(guidance) * self.spatial_kernel()
        kernel = kernel / kernel.sum(1, keepdim=True).clamp(1e-7)
        kernel = kernel + 0.1 * self.fixup_proj(torch.cat([kernel, guidance], dim=1))
        upsampled = F.interpolate(source, size=guidance.shape[-2:], mode="bicubic", align_corners=False)
        padded = F.pad(upsampled, [self.radius] * 4, mode="reflect")
        return adaptive_conv(padded, kernel, contiguous=self.research_precision)


class JBUStack(nn.Module):
    """Four JBU steps, each guided by the image average-pooled to its output grid, and a residual 1x1 fixup."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.up1 = JBULearnedRange()
        self.up2 = JBULearnedRange()
        self.up3 = JBULearnedRange()
        self.up4 = JBULearnedRange()
        self.fixup_proj = nn.Sequential(nn.Dropout2d(0.2), nn.Conv2d(dim, dim, kernel_size=1))

    def forward(self, source: Tensor, guidance: Tensor) -> Tensor:
        for step in (self.up1, self.up2, self.up3, self.up4):
            height, width = source.shape[-2:]
            source = step(source, F.adaptive_avg_pool2d(guidance, (2 * height, 2 * width)))
        return self.fixup_proj(source) * 0.1 + source


class FeatUpJBU(LearnedUpsampler):
    """ChannelNorm then FeatUp's JBU stack, the pair FeatUp's hub model runs after its backbone."""

    scale = 16
    guidance_statistics = "imagenet"  # FeatUp trains every JBU stack on ImageNet-normalized images

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.channelnorm = ChannelNorm(dim)
        self.upsampler = JBUStack(dim)

    def forward_native(self, features: Tensor, guidance: Tensor) -> Tensor:
        """The authors' output: [B, C, 16h, 16w]."""
        return self.upsampler(self.channelnorm(features), guidance)

    def forward(self, features: Tensor, guidance: Tensor) -> Tensor:
        return resize_to(self.forward_native(features, guidance), guidance.shape[-2:], self.align_corners)

    def load_checkpoint(self, path: Path) -> None:
        state = rename_prefixes(read_state_dict(path), NORM_AND_UPSAMPLER)
        if not any(key.startswith("channelnorm.") for key in state) and any(
            key.startswith("upsampler.") for key in state
        ):
            raise UserError(
                f"{path}: a FeatUp JBU stack without its ChannelNorm, as FeatUp's `no_norm/` checkpoints are "
                "(MaskCLIP's only exists so): load it as the upsampler featup_jbu_stack (model.upsampler.name="
                "featup_jbu_stack in a training config, --upsamplers featup_jbu_stack in `plot features`)"
            )
        load_strictly(self, state, f"{path} is not a FeatUp JBU checkpoint for this feature dim")


class FeatUpJBUStack(LearnedUpsampler):
    """FeatUp's JBU stack without the ChannelNorm in front, as iSegProbe's `JBUFeatUp` runs it."""

    scale = 16
    guidance_statistics = "imagenet"

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.upsampler = JBUStack(dim)

    def forward_native(self, features: Tensor, guidance: Tensor) -> Tensor:
        """The stack's output: [B, C, 16h, 16w]."""
        return self.upsampler(features, guidance)

    def forward(self, features: Tensor, guidance: Tensor) -> Tensor:
        return resize_to(self.forward_native(features, guidance), guidance.shape[-2:], self.align_corners)

    def load_checkpoint(self, path: Path) -> None:
        state = rename_prefixes(read_state_dict(path), {"upsampler.": "upsampler."})
        load_strictly(self, state, f"{path} is not a FeatUp JBU checkpoint for this feature dim")


@register_upsampler("featup_jbu")
def create_featup_jbu(dim: int, weights: str | None = None) -> FeatUpJBU:
    return with_weights(FeatUpJBU(dim), weights)


@register_upsampler("featup_jbu_stack")
def create_featup_jbu_stack(dim: int, weights: str | None = None) -> FeatUpJBUStack:
    return with_weights(FeatUpJBUStack(dim), weights)

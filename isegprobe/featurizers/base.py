"""The contract every featurizer keeps, so the cache and the probe never need to look inside one."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor, nn

from isegprobe.errors import UserError


class Featurizer(nn.Module):
    """A frozen image encoder: normalized images [B, 3, H, W] -> dense features [B, dim, H/p, W/p].

    Images must already be normalized with `mean` / `std`; H and W must be multiples of `patch_size`.
    `token_bias` [B, embed_dim, H/p, W/p] is added to the patch tokens before the first block (early fusion):
    the parameters stay frozen, but gradients flow through the blocks back to whatever produced the bias.
    `provenance` holds plain JSON values that identify the features (written into every feature store).
    `patch_size` is the stride of the feature grid: `stride_name` says which word fits the model in messages.
    A featurizer that takes no `token_bias` says why in `early_fusion_refusal`.
    `research_precision`: compute as the iSegProbe research code's own copy of the model does, on the device of the
    images: MaskCLIP in float16 on a GPU (as OpenAI's `clip.load` leaves it there), DINOv2 and the ViT's keys with
    their attention written out (`explicit_attention`); every other featurizer as without it.
    `research_channels`: where the research code lays the same features out in another channel order, its channel
    c is channel research_channels[c] here (a probe's head in research precision reads them in that order).
    `fixed_size`: the one square image size a model runs at (timm builds some for one size: Hiera's position table,
    LeViT's attention biases), None for any multiple of `patch_size`.
    """

    stride_name: ClassVar[str] = "patch size"
    early_fusion_refusal: str | None = None
    fixed_size: int | None = None
    research_precision: bool = False
    research_channels: Tensor | None = None

    def __init__(
        self,
        name: str,
        patch_size: int,
        dim: int,
        embed_dim: int,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        provenance: dict[str, Any],
    ) -> None:
        super().__init__()
        self.name = name
        self.patch_size = patch_size
        self.dim = dim
        self.embed_dim = embed_dim
        self.mean = mean
        self.std = std
        self.provenance = provenance

    def forward(self, images: Tensor, token_bias: Tensor | None = None) -> Tensor:
        raise NotImplementedError

    def train(self, mode: bool = True) -> Featurizer:
        """Stay in eval mode: the featurizer is frozen, so a parent module's `.train()` must not switch on dropout."""
        return super().train(False)

    def freeze(self) -> None:
        self.requires_grad_(False)
        self.eval()

    def feature_grid(self, images: Tensor, token_bias: Tensor | None) -> tuple[int, int]:
        """The (H/p, W/p) grid of `images`, after checking that the inputs keep the contract above."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"{self.name}: expected images [B, 3, H, W], got {tuple(images.shape)}")
        height, width = images.shape[-2:]
        problem = self.size_problem(height, width)
        if problem is not None:
            raise UserError(f"{self.name}: {problem}")
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(
                f"{self.name}: image size {height}x{width} is not a multiple of the patch size {self.patch_size}"
            )
        grid = (height // self.patch_size, width // self.patch_size)
        if token_bias is not None:
            expected = (images.shape[0], self.embed_dim, *grid)
            if tuple(token_bias.shape) != expected:
                raise ValueError(f"{self.name}: token_bias must be {expected}, got {tuple(token_bias.shape)}")
        return grid

    def size_problem(self, height: int, width: int) -> str | None:
        """Why the model cannot run on `height` x `width` images when the size is the user's choice (None where it
        can): a model built for one size runs at that size only."""
        if self.fixed_size is not None and (height, width) != (self.fixed_size, self.fixed_size):
            return f"runs on {self.fixed_size} px images only (timm builds it for that size), not {height}x{width}"
        return None

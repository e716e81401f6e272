"""Early fusion into a timm model whose forward isegprobe does not rewrite: a forward hook on the model's patch
embedding adds the click tokens to its output, before position embeddings, prefix tokens and the first block, which
is where the ViT family adds them too. The hook reads the output in whichever layout the module gives it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from torch import Tensor, nn

# Where timm keeps the patch embedding: ViT, Eva (DINOv3, EVA02), SAM's ViT, ...; NaFlexViT (RADIO) embeds the
# patches with `embeds.proj` and adds its position embeddings after it.
PATCH_EMBEDDINGS = ("patch_embed", "embeds.proj")


@dataclass(frozen=True)
class PatchTokens:
    """A patch embedding module, the layout of its output ("NHWC", "NCHW" or "NLC") and its token width."""

    path: str
    module: nn.Module
    layout: str
    width: int

    @contextmanager
    def adding(self, token_bias: Tensor) -> Iterator[None]:
        """While inside, every forward of the patch embedding returns its tokens plus `token_bias` [B, C, h, w]."""
        bias = _in_layout(token_bias, self.layout)
        handle = self.module.register_forward_hook(lambda _module, _inputs, tokens: tokens + bias)
        try:
            yield
        finally:
            handle.remove()


def find_patch_embedding(model: nn.Module) -> tuple[str, nn.Module] | None:
    """The model's patch embedding module with its attribute path, or None (a CNN stem is none)."""
    for path in PATCH_EMBEDDINGS:
        module = model
        for part in path.split("."):
            module = getattr(module, part, None)
        if isinstance(module, nn.Module):
            return path, module
    return None


def patch_tokens_of(path: str, module: nn.Module, tokens: Tensor, grid: tuple[int, int]) -> PatchTokens | None:
    """What `tokens`, the module's output on an image of `grid` patches, say of its layout; None when no layout
    fits that grid (a patch embedding on another grid than the features') or the output is more than tokens (XCiT's
    and MViTv2's give their grid beside them)."""
    if not isinstance(tokens, Tensor):
        return None
    rows, cols = grid
    if tokens.ndim == 4 and tuple(tokens.shape[1:3]) == grid:
        return PatchTokens(path, module, "NHWC", int(tokens.shape[3]))
    if tokens.ndim == 4 and tuple(tokens.shape[2:]) == grid:
        return PatchTokens(path, module, "NCHW", int(tokens.shape[1]))
    if tokens.ndim == 3 and tokens.shape[1] == rows * cols:
        return PatchTokens(path, module, "NLC", int(tokens.shape[2]))
    return None


def _in_layout(token_bias: Tensor, layout: str) -> Tensor:
    if layout == "NHWC":
        return token_bias.permute(0, 2, 3, 1)
    if layout == "NLC":
        return token_bias.flatten(2).transpose(1, 2)
    return token_bias

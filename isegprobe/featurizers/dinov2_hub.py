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

from torch import Tensor

from isegprobe.explicit_attention import queries_scaled_first
from isegprobe.featurizers.positions import tokens_with_positions
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


@register_featurizer("dinov2_hub")
class DINOv2HubFeaturizer(ViTTokensFeaturizer):
    """The last block's normalized patch tokens of the official DINOv2 (`x_norm_patchtokens`)."""

    position_resampling = "dinov2"
    accepts = tuple(DINOV2_HUB_MODELS)
    research_attention = queries_scaled_first

    @classmethod
    def timm_architecture(cls, name: str, arch: str | None) -> str:
        return DINOV2_HUB_MODELS[name].architecture

    def embed_positions(self, x: Tensor) -> Tensor:
        hub = DINOV2_HUB_MODELS[self.name]
        return tokens_with_positions(self.model, x, hub.interpolate_offset, hub.interpolate_antialias)

"""`create_featurizer(name, weights)`: one entry point from a featurizer name to a frozen, ready module.

Names, by family (`list_featurizers`, `featurizer_forms`):
- `timm_vit`: any timm ViT name (`vit_small_patch14_dinov2`, `vit_base_patch16_clip_quickgelu_224.openai`, ...):
  normalized tokens;
- `timm_vit_keys`: `<timm ViT name>:keys`: the last block's attention keys;
- `maskclip`: `maskclip` or `maskclip:<timm CLIP ViT name>`: MaskCLIP's dense CLIP features;
- `dinov2_hub`: DINOv2's torch.hub names (`dinov2_vits14`, `dinov2_vitb14_reg`, ...): the official model's tokens,
  its own position-embedding interpolation included;
- `timm_dense`: any other timm model with `forward_intermediates` (`vit_small_patch16_dinov3`, `convnext_atto`, ...)
  and `<timm name>@BLOCK` for any of them, ViTs included: a block's normed features.
The models each family has been checked with, one example each: `catalog.py`.
"""

from __future__ import annotations

from typing import Any

from isegprobe.featurizers import dense, dinov2_hub, maskclip, vit  # noqa: F401  (registers the built-in families)
from isegprobe.featurizers.base import Featurizer
from isegprobe.featurizers.normalization import DEFAULT_NORMALIZATION
from isegprobe.featurizers.registry import FEATURIZERS, FamilyClass, find_family
from isegprobe.featurizers.weights import create_timm_model

__all__ = ["create_featurizer", "featurizer_forms", "list_featurizers", "parse_featurizer_name", "recreate_featurizer"]


def create_featurizer(name: str, weights: str = "random", normalization: str = DEFAULT_NORMALIZATION) -> Featurizer:
    """A frozen featurizer in eval mode; `weights` is "random" (seeded), "hub" or a checkpoint file path;
    `normalization` the input statistics ("model": the model's own, "imagenet": iSegProbe's rule for every model)."""
    arch, featurizer_class = parse_featurizer_name(name)
    model, source = create_timm_model(arch, weights, shown_as=name, **featurizer_class.timm_kwargs(arch))
    return featurizer_class(name, model, source, normalization)


def recreate_featurizer(provenance: dict[str, Any], weights: str | None = None) -> Featurizer:
    """The featurizer a store or checkpoint provenance names, built again (`weights` overrides the recorded ones)."""
    return create_featurizer(
        provenance["name"],
        weights=weights or provenance["weights"],
        normalization=provenance.get("normalization", DEFAULT_NORMALIZATION),
    )


def list_featurizers() -> list[str]:
    """The registered families; `featurizer_forms` says which names each accepts."""
    return FEATURIZERS.names()


def featurizer_forms() -> dict[str, tuple[str, ...]]:
    """Family -> the name forms it accepts (`{arch}` stands for a timm model name)."""
    return {family: FEATURIZERS.get(family).accepts for family in list_featurizers()}


def parse_featurizer_name(name: str) -> tuple[str, FamilyClass]:
    """(timm architecture, featurizer class) for `name`; a UserError says what is wrong with a bad name."""
    featurizer_class, arch = find_family(name)
    return featurizer_class.timm_architecture(name, arch), featurizer_class

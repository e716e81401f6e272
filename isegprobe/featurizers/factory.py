"""`create_featurizer(name, weights)`: one entry point from a featurizer name to a frozen, ready module.

Names:
- any timm ViT name (`vit_small_patch14_dinov2`, `vit_base_patch16_clip_224.openai`, ...): normalized tokens;
- `<timm ViT name>:keys`: the last block's attention keys;
- `maskclip` or `maskclip:<timm CLIP ViT name>`: MaskCLIP's dense CLIP features;
- DINOv2's torch.hub names (`dinov2_vits14`, `dinov2_vitb14_reg`, ...): the official model's tokens, its own
  position-embedding interpolation included (isegprobe.featurizers.dinov2_hub).
"""

from __future__ import annotations

import difflib
import functools
from typing import Any

import timm
from timm.models import get_pretrained_cfg, split_model_name_tag

from isegprobe.errors import UserError
from isegprobe.featurizers.base import Featurizer
from isegprobe.featurizers.dinov2_hub import DINOV2_HUB_MODELS, DINOv2HubFeaturizer
from isegprobe.featurizers.maskclip import DEFAULT_CLIP_ARCH, MaskCLIPFeaturizer
from isegprobe.featurizers.normalization import DEFAULT_NORMALIZATION
from isegprobe.featurizers.vit import TimmViTFeaturizer, ViTKeysFeaturizer, ViTTokensFeaturizer
from isegprobe.featurizers.weights import create_timm_model

KEYS_SUFFIX = ":keys"
MASKCLIP = "maskclip"


def create_featurizer(name: str, weights: str = "random", normalization: str = DEFAULT_NORMALIZATION) -> Featurizer:
    """A frozen featurizer in eval mode; `weights` is "random" (seeded), "hub" or a checkpoint file path;
    `normalization` the input statistics ("model": the model's own, "imagenet": iSegProbe's rule for every model)."""
    arch, featurizer_class = parse_featurizer_name(name)
    model, source = create_timm_model(arch, weights, **featurizer_class.model_kwargs)
    return featurizer_class(name, model, source, normalization)


def recreate_featurizer(provenance: dict[str, Any], weights: str | None = None) -> Featurizer:
    """The featurizer a store or checkpoint provenance names, built again (`weights` overrides the recorded ones)."""
    return create_featurizer(
        provenance["name"],
        weights=weights or provenance["weights"],
        normalization=provenance.get("normalization", DEFAULT_NORMALIZATION),
    )


def parse_featurizer_name(name: str) -> tuple[str, type[TimmViTFeaturizer]]:
    """(timm architecture, featurizer class) for `name`; a UserError says what is wrong with a bad name."""
    if name in DINOV2_HUB_MODELS:
        return DINOV2_HUB_MODELS[name].architecture, DINOv2HubFeaturizer
    if name.removesuffix(KEYS_SUFFIX) in DINOV2_HUB_MODELS:
        timm_name = DINOV2_HUB_MODELS[name.removesuffix(KEYS_SUFFIX)].architecture
        raise UserError(f"{name}: keys are offered on timm names, e.g. {timm_name}{KEYS_SUFFIX}")
    if name == MASKCLIP:
        return DEFAULT_CLIP_ARCH, MaskCLIPFeaturizer
    if name.startswith(MASKCLIP + ":"):
        arch = name[len(MASKCLIP) + 1 :]
        check_timm_vit(arch)
        if "clip" not in split_model_name_tag(arch)[0]:
            raise UserError(f"{name}: MaskCLIP needs a CLIP image tower, e.g. maskclip:{DEFAULT_CLIP_ARCH}")
        return arch, MaskCLIPFeaturizer
    if name.endswith(KEYS_SUFFIX):
        arch = name[: -len(KEYS_SUFFIX)]
        check_timm_vit(arch)
        return arch, ViTKeysFeaturizer
    if ":" in name:
        raise UserError(
            f"unknown featurizer {name!r}: use a timm ViT name, '<timm ViT name>{KEYS_SUFFIX}', "
            f"'{MASKCLIP}', '{MASKCLIP}:<timm CLIP ViT name>' or a DINOv2 torch.hub name (e.g. dinov2_vits14)"
        )
    check_timm_vit(name)
    return name, ViTTokensFeaturizer


def check_timm_vit(arch: str) -> None:
    """Accept only timm's plain ViTs (timm.models.vision_transformer), with a valid pretrained tag if one is given."""
    base, tag = split_model_name_tag(arch)
    if base not in _timm_vits():
        if timm.is_model(base):
            raise UserError(
                f"{arch} is a timm model but not a ViT from timm.models.vision_transformer; isegprobe needs one "
                "(e.g. vit_small_patch14_dinov2)"
            )
        close = difflib.get_close_matches(base, sorted(_timm_vits()), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else " (see timm.list_models('vit_*'))"
        raise UserError(f"unknown featurizer {arch!r}: not a timm ViT name{hint}")
    if tag:
        try:
            get_pretrained_cfg(arch, allow_unregistered=False)
        except RuntimeError as error:
            tags = ", ".join(timm.list_pretrained(f"{base}.*")) or "none"
            raise UserError(f"{arch}: timm has no pretrained tag {tag!r} for {base} (known: {tags})") from error


@functools.cache
def _timm_vits() -> frozenset[str]:
    return frozenset(timm.list_models(module="vision_transformer"))

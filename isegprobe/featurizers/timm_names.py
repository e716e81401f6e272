"""Which timm names a featurizer can be built on: timm's plain ViTs, or any timm model, with a pretrained tag timm
knows."""

from __future__ import annotations

import difflib
import functools

import timm
from timm.models import get_pretrained_cfg, split_model_name_tag

from isegprobe.errors import UserError

OWN_NAMES_HELP = "`isegprobe extract-features --help` lists every kind of name, with an example of each"


def check_timm_vit(arch: str) -> None:
    """Accept only timm's plain ViTs (timm.models.vision_transformer), with a valid pretrained tag if one is given."""
    base, _ = split_model_name_tag(arch)
    if base not in _timm_vits():
        if timm.is_model(base):
            raise UserError(
                f"{arch} is a timm model but not a ViT from timm.models.vision_transformer; isegprobe needs one "
                "(e.g. vit_small_patch14_dinov2)"
            )
        close = difflib.get_close_matches(base, sorted(_timm_vits()), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else " (see timm.list_models('vit_*'))"
        raise UserError(f"unknown featurizer {arch!r}: not a timm ViT name{hint}")
    _check_tag(arch)


def check_timm_model(arch: str) -> None:
    """Accept any timm model name, with a valid pretrained tag if one is given."""
    base, _ = split_model_name_tag(arch)
    if not timm.is_model(base):
        close = difflib.get_close_matches(base, timm.list_models(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; timm.list_models() lists timm's"
        raise UserError(
            f"unknown featurizer {arch!r}: neither a timm model name nor one of isegprobe's own names "
            f"({OWN_NAMES_HELP}){hint}"
        )
    _check_tag(arch)


def is_timm_vit(arch: str) -> bool:
    """True for a name of timm's plain ViTs (whatever its tag): the ones the ViT families build."""
    return split_model_name_tag(arch)[0] in _timm_vits()


def _check_tag(arch: str) -> None:
    base, tag = split_model_name_tag(arch)
    if tag:
        try:
            get_pretrained_cfg(arch, allow_unregistered=False)
        except RuntimeError as error:
            tags = ", ".join(timm.list_pretrained(f"{base}.*")) or "none"
            raise UserError(f"{arch}: timm has no pretrained tag {tag!r} for {base} (known: {tags})") from error


@functools.cache
def _timm_vits() -> frozenset[str]:
    return frozenset(timm.list_models(module="vision_transformer"))

"""Featurizer families, timm style: each family's class registers itself with the featurizer names it accepts, and
`create_featurizer` (isegprobe.featurizers.factory, which imports the built-in families) builds a name with the
family it belongs to.

A family gives its names as forms: fixed names (`dinov2_vits14`) or a pattern with one `{arch}` slot that holds a
timm ViT name (`{arch}`, `{arch}:keys`, `maskclip:{arch}`). A fixed name wins over any pattern, and of two patterns
the one with more fixed text, so `maskclip:x` is MaskCLIP on x, and `x:keys` the keys of x.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from isegprobe.errors import UserError
from isegprobe.registry import Registry

if TYPE_CHECKING:
    from isegprobe.featurizers.vit import TimmViTFeaturizer

ARCH_SLOT = "{arch}"
FamilyClass = type["TimmViTFeaturizer"]

FEATURIZERS: Registry[FamilyClass] = Registry("featurizer family")


def register_featurizer(family: str) -> Callable[[FamilyClass], FamilyClass]:
    """Decorate a featurizer class (its `accepts` forms and `timm_architecture`) to make its names buildable."""
    return FEATURIZERS.register(family)


def find_family(name: str) -> tuple[FamilyClass, str | None]:
    """The class of the family `name` belongs to, and the timm name in its `{arch}` slot (None for a fixed name)."""
    best: tuple[int, FamilyClass, str, str] | None = None
    for featurizer_class in _families():
        for form in featurizer_class.accepts:
            if form == name:
                return featurizer_class, None
            arch = _slot_value(form, name)
            if arch is not None and (best is None or _fixed_text(form) > best[0]):
                best = (_fixed_text(form), featurizer_class, form, arch)
    if best is None:
        forms = ", ".join(form for featurizer_class in _families() for form in featurizer_class.accepts)
        raise UserError(f"unknown featurizer {name!r}: use one of {forms} ({ARCH_SLOT}: a timm ViT name)")
    _, featurizer_class, form, arch = best
    _refuse_a_fixed_name_in_the_slot(name, form, arch)
    return featurizer_class, arch


def _refuse_a_fixed_name_in_the_slot(name: str, form: str, arch: str) -> None:
    """`dinov2_vits14:keys`: the slot takes timm names, and a family's own fixed name is none; say which one is."""
    for featurizer_class in _families():
        if arch in featurizer_class.accepts:
            timm_name = featurizer_class.timm_architecture(arch, None)
            raise UserError(
                f"{name}: {form} takes a timm ViT name, which {arch} is not; e.g. {form.replace(ARCH_SLOT, timm_name)}"
            )


def _families() -> list[FamilyClass]:
    return [FEATURIZERS.get(family) for family in FEATURIZERS.names()]


def _slot_value(form: str, name: str) -> str | None:
    if ARCH_SLOT not in form:
        return None
    prefix, suffix = (re.escape(part) for part in form.split(ARCH_SLOT))
    match = re.fullmatch(f"{prefix}([^:]+){suffix}", name)
    return match.group(1) if match else None


def _fixed_text(form: str) -> int:
    return len(form.replace(ARCH_SLOT, ""))

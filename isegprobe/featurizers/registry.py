"""Featurizer families, timm style: each family's class registers itself with the featurizer names it accepts, and
`create_featurizer` (isegprobe.featurizers.factory, which imports the built-in families) builds a name with the
family it belongs to.

A family gives its names as forms: fixed names (`dinov2_vits14`) or a pattern with one `{arch}` slot that holds a
timm model name (`{arch}`, `{arch}:keys`, `maskclip:{arch}`). A fixed name wins over any pattern, and of two patterns
the one with more fixed text, so `maskclip:x` is MaskCLIP on x, and `x:keys` the keys of x. Where two families take
the same form (`{arch}`: timm's plain ViTs and every other timm model), the one that `claims` the name builds it.

A name may end in `@BLOCK` (`convnext_atto@2`, `vit_small_patch16_dinov3@-4`: negative counts from the end): the
features of that block or stage instead of the last; only a family that claims block choices takes it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, ClassVar, Protocol

from isegprobe.errors import UserError
from isegprobe.registry import Registry

ARCH_SLOT = "{arch}"
_WITH_BLOCK = re.compile(r"(.+)@(-?\d+)")


class FamilyClass(Protocol):
    """What the registry and `create_featurizer` need of a family's class (vit.py and dense.py keep it)."""

    accepts: ClassVar[tuple[str, ...]]

    @classmethod
    def claims(cls, arch: str | None, block: int | None) -> bool: ...

    @classmethod
    def timm_architecture(cls, name: str, arch: str | None) -> str: ...

    @classmethod
    def timm_kwargs(cls, arch: str) -> dict[str, Any]: ...

    def __call__(self, name: str, model: Any, weights: Any, normalization: str) -> Any: ...


FEATURIZERS: Registry[FamilyClass] = Registry("featurizer family")


def register_featurizer(family: str) -> Callable[[FamilyClass], FamilyClass]:
    """Decorate a featurizer class (its `accepts` forms and `timm_architecture`) to make its names buildable."""
    return FEATURIZERS.register(family)


def split_block(name: str) -> tuple[str, int | None]:
    """`x@-4` -> ("x", -4); a name without `@BLOCK` -> (name, None)."""
    match = _WITH_BLOCK.fullmatch(name)
    return (match.group(1), int(match.group(2))) if match else (name, None)


def find_family(name: str) -> tuple[FamilyClass, str | None]:
    """The class of the family `name` belongs to, and the timm name in its `{arch}` slot (None for a fixed name),
    without any `@BLOCK` suffix."""
    base, block = split_block(name)
    candidates = _candidates(base)
    if not candidates:
        forms = ", ".join(dict.fromkeys(form for featurizer_class in _families() for form in featurizer_class.accepts))
        raise UserError(f"unknown featurizer {name!r}: use one of {forms} ({ARCH_SLOT}: a timm model name)")
    chosen = next(((cls, form, arch) for cls, form, arch in candidates if cls.claims(arch, block)), None)
    if chosen is None and block is not None:
        raise UserError(
            f"{name}: @BLOCK picks a block of a plain timm model name ({ARCH_SLOT}@BLOCK, e.g. "
            f"vit_small_patch16_dinov3@-4); {base} takes no block"
        )
    featurizer_class, form, arch = chosen or candidates[0]
    if arch is not None:
        _refuse_a_fixed_name_in_the_slot(name, form, arch)
    return featurizer_class, arch


def _candidates(name: str) -> list[tuple[FamilyClass, str, str | None]]:
    """(class, form, slot value) of the families whose forms match `name` best: a fixed name alone, else the
    patterns with the most fixed text."""
    matches: list[tuple[int, FamilyClass, str, str]] = []
    for featurizer_class in _families():
        for form in featurizer_class.accepts:
            if form == name:
                return [(featurizer_class, form, None)]
            arch = _slot_value(form, name)
            if arch is not None:
                matches.append((_fixed_text(form), featurizer_class, form, arch))
    most = max((fixed for fixed, *_ in matches), default=0)
    return [(cls, form, arch) for fixed, cls, form, arch in matches if fixed == most]


def _refuse_a_fixed_name_in_the_slot(name: str, form: str, arch: str) -> None:
    """`dinov2_vits14:keys`: the slot takes timm names, and a family's own fixed name is none; say which one is."""
    for featurizer_class in _families():
        if arch in featurizer_class.accepts:
            timm_name = featurizer_class.timm_architecture(arch, None)
            example = form.replace(ARCH_SLOT, timm_name)
            pattern = form.replace(ARCH_SLOT, "NAME")
            raise UserError(f"{name}: {pattern} takes a timm model name as NAME, which {arch} is not; e.g. {example}")


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

"""Featurizers: frozen vision models (timm ViTs, DINOv2, CLIP, MaskCLIP, and any timm model with
`forward_intermediates`: DINOv3, EVA02, SAM, ConvNeXt, ...) behind one interface: images -> dense features.

timm, and torchvision with it, take about 2 s to import, and torch 2 s more; they load with the first use of a
name below that needs them, so the commands that never build a featurizer start without timm, and every command's
--help (which lists the families of `featurizers.catalog`) without either.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from isegprobe.featurizers.base import Featurizer
    from isegprobe.featurizers.factory import (
        create_featurizer,
        featurizer_forms,
        list_featurizers,
        parse_featurizer_name,
        recreate_featurizer,
    )
    from isegprobe.featurizers.registry import register_featurizer
    from isegprobe.featurizers.weights import RandomWeightsWarning

_LAZY = {
    "Featurizer": "isegprobe.featurizers.base",
    "create_featurizer": "isegprobe.featurizers.factory",
    "featurizer_forms": "isegprobe.featurizers.factory",
    "list_featurizers": "isegprobe.featurizers.factory",
    "parse_featurizer_name": "isegprobe.featurizers.factory",
    "recreate_featurizer": "isegprobe.featurizers.factory",
    "register_featurizer": "isegprobe.featurizers.registry",
    "RandomWeightsWarning": "isegprobe.featurizers.weights",
}

__all__ = [
    "Featurizer",
    "RandomWeightsWarning",
    "create_featurizer",
    "featurizer_forms",
    "list_featurizers",
    "parse_featurizer_name",
    "recreate_featurizer",
    "register_featurizer",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

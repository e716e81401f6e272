"""The feature cache: Zarr v3 stores of a frozen featurizer's features, their writer and their reader.

The reader and the store load torch, zarr and tensorstore (2 to 3 s); they load with the first use of their names,
so that importing a light module of the package (`cache.schema`, whose codecs extract-features' --help lists) does
not.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from isegprobe.cache.reader import CachedDataset
    from isegprobe.cache.store import FeatureStore

_LAZY = {"CachedDataset": "isegprobe.cache.reader", "FeatureStore": "isegprobe.cache.store"}

__all__ = ["CachedDataset", "FeatureStore"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

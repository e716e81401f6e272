"""The feature cache: Zarr v3 stores of a frozen featurizer's features, their writer and their reader."""

from isegprobe.cache.reader import CachedDataset
from isegprobe.cache.store import FeatureStore

__all__ = ["CachedDataset", "FeatureStore"]

"""Datasets: one module per family, a registry, and the `Sample` type they all yield."""

from isegprobe.data import builtin, grabcut
from isegprobe.data.registry import SampleSource, create_dataset, list_datasets, register_dataset
from isegprobe.data.sample import Sample

__all__ = ["Sample", "SampleSource", "builtin", "create_dataset", "grabcut", "list_datasets", "register_dataset"]

"""Datasets: one module per family, a registry, and the `Sample` type they all yield."""

from isegprobe.data import (
    ade20k,
    berkeley,
    builtin,
    coco,
    coco_mval,
    cocolvis,
    custom,
    davis,
    grabcut,
    lvis,
    openimages,
    pascalvoc,
    sbd,
)
from isegprobe.data.registry import SampleSource, create_dataset, list_datasets, register_dataset
from isegprobe.data.roots import dataset_root, resolve_root, root_origin_told
from isegprobe.data.sample import Sample

__all__ = [
    "Sample",
    "SampleSource",
    "ade20k",
    "berkeley",
    "builtin",
    "coco",
    "coco_mval",
    "cocolvis",
    "create_dataset",
    "custom",
    "dataset_root",
    "davis",
    "grabcut",
    "list_datasets",
    "lvis",
    "openimages",
    "pascalvoc",
    "register_dataset",
    "resolve_root",
    "root_origin_told",
    "sbd",
]

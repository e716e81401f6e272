"""COCO MVal: 800 COCO objects, one per sample, in DAVIS's layout (`img/`, `gt/`); RITM reads it with its DAVIS loader.

Two samples may show the same COCO picture (`airplane00_000000281693`, `airplane01_000000281693`): each is its own
image file and its own sample, as in the published 800 / 800.
"""

from __future__ import annotations

from pathlib import Path

from isegprobe.data.base import build_source
from isegprobe.data.folder_pairs import MaskFolderDataset, ritm_davis_mask
from isegprobe.data.registry import SampleSource, register_dataset


def coco_mval_dataset(root: Path, split: str) -> MaskFolderDataset:
    return MaskFolderDataset("coco_mval", root, split, "img", "gt", ritm_davis_mask, numbered_masks=False)


@register_dataset("coco_mval")
def _create(root: Path | None, split: str) -> SampleSource:
    return build_source("coco_mval", root, split, coco_mval_dataset)

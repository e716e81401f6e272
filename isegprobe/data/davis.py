"""DAVIS as the interactive-segmentation test set: 345 frames, one object each (`img/`, `gt/`, matched by stem).

A mask pixel above 0 in any colour channel is object, as RITM's DAVIS loader reads it (`binary_masks`); there is no
ignore region.
"""

from __future__ import annotations

from pathlib import Path

from isegprobe.data.base import build_source
from isegprobe.data.folder_pairs import MaskFolderDataset, ritm_davis_mask
from isegprobe.data.registry import SampleSource, register_dataset


def davis_dataset(root: Path, split: str) -> MaskFolderDataset:
    return MaskFolderDataset("davis", root, split, "img", "gt", ritm_davis_mask, numbered_masks=False)


@register_dataset("davis")
def _create(root: Path | None, split: str) -> SampleSource:
    return build_source("davis", root, split, davis_dataset)

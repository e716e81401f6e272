"""DAVIS as the interactive-segmentation test set: 345 frames, one object each (`img/`, `gt/`, matched by stem).

RITM's rule: a mask pixel non-zero in any channel is object; there is no ignore region.
"""

from __future__ import annotations

from pathlib import Path

from isegprobe.data.base import build_source
from isegprobe.data.folder_pairs import MaskFolderDataset, any_channel_mask
from isegprobe.data.registry import SampleSource, register_dataset


def davis_dataset(root: Path, split: str) -> MaskFolderDataset:
    return MaskFolderDataset("davis", root, split, "img", "gt", any_channel_mask, numbered_masks=False)


@register_dataset("davis")
def _create(root: Path | None, split: str) -> SampleSource:
    return build_source("davis", root, split, davis_dataset)

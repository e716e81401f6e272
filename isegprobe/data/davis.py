"""DAVIS as the interactive-segmentation test set: 345 frames, one object each (`img/`, `gt/`, matched by stem).

A mask pixel above 128 in any channel is object (`binary_masks`; RITM's "non-zero" on the published 0/255 masks);
there is no ignore region.
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

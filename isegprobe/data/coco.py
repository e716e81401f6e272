"""MS COCO 2017 instance masks, from the official `instances_<split>.json` (decoded with pycocotools).

Layout: `annotations/instances_train2017.json`, `annotations/instances_val2017.json` and the images in `train2017/`,
`val2017/` (or `images/train2017/`, ...). Splits `train`/`val` are aliases; `test` means `val2017`. RITM trains on
COCO's panoptic masks, which do not overlap; the instances JSON does, hence the per-image painting and the exact
`-instances` split described in `coco_format`.
"""

from __future__ import annotations

from pathlib import Path

from isegprobe.data.base import build_source
from isegprobe.data.coco_format import AnnotatedImagesDataset
from isegprobe.data.registry import SampleSource, register_dataset


def coco_dataset(root: Path, split: str) -> AnnotatedImagesDataset:
    annotation_file = root / "annotations" / f"instances_{split}.json"
    return AnnotatedImagesDataset("coco", root, split, annotation_file, [root / split, root / "images" / split])


@register_dataset("coco")
def _create(root: Path | None, split: str) -> SampleSource:
    return build_source("coco", root, split, coco_dataset)

"""LVIS v1.0 in RITM's layout: `train/lvis_train.json` + `train/images/`, `val/lvis_val.json` + `val/images/`.

The official file names (`lvis_v1_train.json`, in the split folder or the root) work too. Images are the COCO 2017
ones; an LVIS v1 val image may come from COCO's train2017, so, like RITM, the folder follows the image's `coco_url`.
Masks are the polygons filled with OpenCV as RITM does. `max_overlap_ratio` (RITM: 0.5, set for train in
configs/datasets.yaml) skips, in per-image samples, an object overlapping an earlier one by more than that share;
RITM shuffles the objects first, here the annotation order decides, so that a sample is the same every time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from isegprobe.data.base import build_source
from isegprobe.data.coco_format import AnnotatedImagesDataset, check_polygons
from isegprobe.data.registry import SampleSource, register_dataset
from isegprobe.errors import UserError


def polygon_mask(segmentation: list[list[float]], height: int, width: int) -> np.ndarray:
    if not isinstance(segmentation, list):
        raise ValueError(f"LVIS segmentations are lists of polygons, got {type(segmentation).__name__}")
    check_polygons(segmentation, height, width)
    mask = np.zeros((height, width), np.uint8)
    for polygon in segmentation:
        points = np.round(np.asarray(polygon, np.float64).reshape(-1, 2)).astype(np.int32)
        cv2.fillPoly(mask, [points], 1)
    return mask.astype(bool)


class LVISDataset(AnnotatedImagesDataset):
    def __init__(self, root: Path, split: str, max_overlap_ratio: float | None = None) -> None:
        candidates = [
            root / split / f"lvis_{split}.json",
            root / split / f"lvis_v1_{split}.json",
            root / f"lvis_v1_{split}.json",
        ]
        annotation_file = next((path for path in candidates if path.is_file()), candidates[0])
        self.max_overlap_ratio = max_overlap_ratio
        super().__init__("lvis", root, split, annotation_file, [root / "train" / "images", root / "val" / "images"])

    def _file_name(self, image: dict[str, Any]) -> str:
        url = image["coco_url"]
        if not isinstance(url, str):
            raise UserError(f"{self.annotation_file}: image {image.get('id')!r}: coco_url must be a URL, got {url!r}")
        return url.rsplit("/", 1)[-1]

    def _image_path(self, image: dict[str, Any]) -> Path:
        folder = self.image_dirs[0] if "train2017" in image["coco_url"] else self.image_dirs[1]
        path = folder / self._file_name(image)
        if not path.is_file():
            raise UserError(f"{path}: image of {self.annotation_file.name} not found")
        return path

    def _mask(self, annotation: dict[str, Any], height: int, width: int) -> np.ndarray:
        return polygon_mask(annotation["segmentation"], height, width)


@register_dataset("lvis")
def _create(root: Path | None, split: str) -> SampleSource:
    return build_source("lvis", root, split, LVISDataset)

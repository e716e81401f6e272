"""GrabCut (Rother et al. 2004) in the layout the field uses since RITM.

`data_GT/` holds the 50 images (.jpg, .JPG, .bmp), `boundary_GT/` one .bmp mask per image with the same stem:
255 object, 0 background, 128 the unlabelled band along the object's boundary (ignored by the IoU).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from isegprobe.data.image_io import IMAGE_SUFFIXES, find_by_stem, read_gray, read_rgb
from isegprobe.data.registry import register_dataset
from isegprobe.data.sample import Sample
from isegprobe.errors import UserError

OBJECT_VALUE = 255
IGNORE_VALUE = 128


class GrabCutDataset:
    """One sample per image: a single instance and its ignore band."""

    name = "grabcut"

    def __init__(self, root: Path, split: str = "test") -> None:
        self.root = str(root)
        self.split = split
        self.image_dir = root / "data_GT"
        self.mask_dir = root / "boundary_GT"
        for folder in (self.image_dir, self.mask_dir):
            if not folder.is_dir():
                raise UserError(f"--root {root}: expected the GrabCut layout with {folder.name}/ inside, not found")
        self._masks = sorted(p for p in self.mask_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self._masks:
            raise UserError(f"{self.mask_dir}: no masks found")

    def __len__(self) -> int:
        return len(self._masks)

    def ids(self) -> list[str]:
        return [path.stem for path in self._masks]

    def __getitem__(self, index: int) -> Sample:
        mask_path = self._masks[index]
        image_path = find_by_stem(self.image_dir, mask_path.stem)
        if image_path is None:
            raise UserError(f"{mask_path}: no image with stem {mask_path.stem!r} in {self.image_dir}")
        image = read_rgb(image_path)
        mask = read_gray(mask_path)
        if mask.shape != image.shape[:2]:
            raise UserError(
                f"{mask_path}: mask size {mask.shape} differs from image {image_path.name} {image.shape[:2]}"
            )
        labels = (mask == OBJECT_VALUE).astype(np.uint16)
        if not labels.any():
            raise UserError(f"{mask_path}: no object pixel (value {OBJECT_VALUE}) in this GrabCut mask")
        return Sample(id=mask_path.stem, image=image, labels=labels, ignore=mask == IGNORE_VALUE)


@register_dataset("grabcut")
def _create(root: Path | None, split: str) -> GrabCutDataset:
    if root is None:
        raise UserError("--root: the GrabCut dataset needs the folder that holds data_GT/ and boundary_GT/")
    return GrabCutDataset(root, split)

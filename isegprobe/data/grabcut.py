"""GrabCut (Rother et al. 2004) in the layout the field uses since RITM.

`data_GT/` holds the 50 images (.jpg, .JPG, .bmp), `boundary_GT/` one .bmp mask per image with the same stem:
255 object, 0 background, 128 the unlabelled band along the object's boundary (ignored by the IoU). Masks are read
by RITM's GrabCut loader's rule (`binary_masks`: above 128 object, exactly 128 ignored). Items come in RITM's order,
its images' file names.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from isegprobe.data.base import parse_split, require_same_size
from isegprobe.data.binary_masks import OBJECT_ABOVE, ritm_grabcut_rule
from isegprobe.data.catalog import dataset_facts
from isegprobe.data.image_io import files_by_stem, only_file, read_mask, read_rgb, unread_files_named
from isegprobe.data.registry import register_dataset
from isegprobe.data.sample import Sample
from isegprobe.errors import DatasetLayoutError, UserError


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
                raise DatasetLayoutError(root, f"expected the GrabCut layout with {folder.name}/ inside, not found")
        self._masks = files_by_stem(self.mask_dir)
        if not self._masks:
            raise UserError(f"{self.mask_dir}: no masks found")
        self._images = files_by_stem(self.image_dir)
        # RITM's order, its images' file names; an image without a mask, or a mask without an image, is an item
        # that reading reports.
        self._ids = sorted(
            self._images.keys() | self._masks.keys(),
            key=lambda stem: (self._images.get(stem) or self._masks[stem])[0].name,
        )

    def __len__(self) -> int:
        return len(self._ids)

    def ids(self) -> list[str]:
        return self._ids

    def __getitem__(self, index: int) -> Sample:
        stem = self._ids[index]
        if stem not in self._masks:
            image = only_file(self._images[stem], "image")
            raise UserError(f"{image}: no mask named {stem}.* in {self.mask_dir}")
        mask_path = only_file(self._masks[stem], "mask")
        if stem not in self._images:
            raise UserError(
                f"{mask_path}: no image with stem {stem!r} in {self.image_dir}"
                + unread_files_named(self.image_dir, stem)
            )
        image_path = only_file(self._images[stem], "image")
        image = read_rgb(image_path)
        mask, lossy = read_mask(mask_path)
        require_same_size(mask_path, mask.shape, image_path, image.shape)
        obj, ignore = ritm_grabcut_rule(mask, lossy)
        if not obj.any():
            raise UserError(f"{mask_path}: no object pixel (value above {OBJECT_ABOVE}) in this GrabCut mask")
        return Sample(id=stem, image=image, labels=obj.astype(np.uint16), ignore=ignore)


@register_dataset("grabcut")
def _create(root: Path | None, split: str) -> GrabCutDataset:
    if root is None:
        raise UserError("--root: the GrabCut dataset needs the folder that holds data_GT/ and boundary_GT/")
    dataset_facts("grabcut").resolve_split(parse_split(split)[0])  # refuses a split GrabCut does not have
    return GrabCutDataset(root, split)

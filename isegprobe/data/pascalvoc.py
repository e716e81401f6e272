"""PASCAL VOC 2012 object masks: the `VOCdevkit/VOC2012` folder as the official archive unpacks it.

`JPEGImages/<id>.jpg`, `SegmentationObject/<id>.png` (palette PNG: index k is object k, 255 the unlabelled border),
`ImageSets/Segmentation/{train,val,trainval}.txt`. The 255 border is the ignore region of every object. The palette
indices are read as they are stored; RITM instead converts the palette colours to grey (so its border reads 220).
`test` means `val` (1449 images, 3417 instances); `val-instances` gives one sample per object.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from isegprobe.data.base import NameListDataset, build_source, require_same_size
from isegprobe.data.image_io import read_rgb, require_within_pixel_limit
from isegprobe.data.instance_maps import compact_labels
from isegprobe.data.registry import SampleSource, register_dataset
from isegprobe.data.sample import Sample
from isegprobe.errors import DatasetLayoutError, UserError

IGNORE_INDEX = 255


def read_palette_indices(path: Path) -> np.ndarray:
    """uint8 [H, W] palette indices; OpenCV would return the palette's colours instead. Pillow reads them as
    stored (no EXIF turn), and the pixel limit applies before the pixels are decoded."""
    try:
        with Image.open(path) as image:
            if image.mode not in ("P", "L"):
                raise UserError(f"{path}: expected a palette or grey PNG of object indices, got mode {image.mode}")
            require_within_pixel_limit(image.height, image.width, str(path))
            return np.array(image)
    except (OSError, SyntaxError, Image.DecompressionBombError) as error:
        raise UserError(f"{path}: cannot read this mask ({error})") from None


class PascalVOCDataset(NameListDataset):
    def __init__(self, root: Path, split: str) -> None:
        self.name, self.split, self.root = "pascalvoc", split, str(root)
        self.image_dir, self.mask_dir = root / "JPEGImages", root / "SegmentationObject"
        list_file = root / "ImageSets" / "Segmentation" / f"{split}.txt"
        for needed in (self.image_dir, self.mask_dir, list_file):
            if not needed.exists():
                layout = f"JPEGImages/, SegmentationObject/ and {list_file.relative_to(root)}"
                raise DatasetLayoutError(root, f"expected VOC2012's {layout}; {needed.name} not found")
        super().__init__(list_file)

    def _indices(self, name: str) -> np.ndarray:
        return read_palette_indices(self.mask_dir / f"{name}.png")

    def __getitem__(self, index: int) -> Sample:
        name = self._names[index]
        image_path = self.image_dir / f"{name}.jpg"
        image = read_rgb(image_path)
        indices = self._indices(name)
        require_same_size(self.mask_dir / f"{name}.png", indices.shape, image_path, image.shape)
        ignore = indices == IGNORE_INDEX
        labels = compact_labels(np.where(ignore, 0, indices))
        return Sample(id=name, image=image, labels=labels, ignore=ignore)

    def count_instances(self, name: str) -> int:
        return len(np.setdiff1d(np.unique(self._indices(name)), [0, IGNORE_INDEX]))


@register_dataset("pascalvoc")
def _create(root: Path | None, split: str) -> SampleSource:
    return build_source("pascalvoc", root, split, PascalVOCDataset)

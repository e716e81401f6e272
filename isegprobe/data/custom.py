"""Your own data, in either of two forms (`--root` tells which):

- a folder with `images/` and `masks/`: one mask file per object, named like its image (`cat.png` for `cat.jpg`),
  further objects of the same image `cat_2.png`, `cat_3.png`, ...; mask values > 128 are object, exactly 128 ignored
  (RITM's rule; plain 0/255 masks just work);
- a COCO-format JSON file (polygons or RLE, decoded with pycocotools); images are looked up by `file_name` next to
  the JSON, then in an `images/` folder beside it.

The split only names the samples (and the feature store); `test-instances` gives one sample per object.
"""

from __future__ import annotations

from pathlib import Path

from isegprobe.data.base import DatasetBase, build_source
from isegprobe.data.coco_format import AnnotatedImagesDataset
from isegprobe.data.folder_pairs import MaskFolderDataset, banded_mask
from isegprobe.data.registry import SampleSource, register_dataset


def custom_dataset(root: Path, split: str) -> DatasetBase:
    if root.is_file():
        return AnnotatedImagesDataset("custom", root, split, root, [root.parent, root.parent / "images"])
    return MaskFolderDataset("custom", root, split, "images", "masks", banded_mask, numbered_masks=True)


@register_dataset("custom")
def _create(root: Path | None, split: str) -> SampleSource:
    return build_source("custom", root, split, custom_dataset)

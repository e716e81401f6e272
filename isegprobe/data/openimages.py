"""Open Images V6 instance masks, from the official segmentation CSV and mask PNGs.

Layout, per split (`train`, `validation`, `test`; `val` is an alias): `<split>/images/<ImageID>.jpg`,
`<split>/masks/<MaskPath>` (the mask zips unpacked flat) and `<split>-annotations-object-segmentation.csv` in
`<split>/` (RITM's place) or in the root. Open Images masks are stored at their own resolution: they are resized to
the image with nearest neighbour (RITM instead shrinks the image to the mask). A mask pixel above 128 is object
(`binary_masks`; the published masks hold 0 and 255).
Per image, masks are painted in CSV order, later on top; `-instances` gives each mask exactly.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

from isegprobe.data.base import DatasetBase, build_source, instance_sample_of, is_plain_name
from isegprobe.data.binary_masks import object_and_ignore
from isegprobe.data.image_io import read_gray, read_rgb
from isegprobe.data.instance_maps import paint_instances
from isegprobe.data.registry import SampleSource, register_dataset
from isegprobe.data.sample import Sample
from isegprobe.errors import DatasetLayoutError, UserError


def read_mask_lists(csv_path: Path) -> dict[str, list[str]]:
    """ImageID -> its MaskPath values, in file order. The file is read as UTF-8 whatever the locale, past a
    byte-order mark (a spreadsheet's "CSV UTF-8" begins with one, which made the first column '\\ufeffMaskPath')."""
    masks: dict[str, list[str]] = defaultdict(list)
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as file:
            rows = csv.DictReader(file)
            for row in rows:
                image_id, mask_path = row["ImageID"], row["MaskPath"]
                _require_file_names(csv_path, rows.line_num, image_id, mask_path)
                masks[image_id].append(mask_path)
    except KeyError as error:
        raise UserError(f"{csv_path}: expected the columns MaskPath and ImageID, {error} is missing") from None
    except (OSError, csv.Error, UnicodeDecodeError) as error:
        raise UserError(f"{csv_path}: cannot read ({error})") from None
    if not masks:
        raise UserError(f"{csv_path}: lists no mask (one row per mask, with its MaskPath and ImageID)")
    return masks


def _require_file_names(csv_path: Path, line: int, image_id: str | None, mask_path: str | None) -> None:
    """ImageID and MaskPath name files in images/ and masks/: a row of fewer columns leaves them None, and a path
    (`../../x`) read a file from outside the dataset's root."""
    for column, value in (("ImageID", image_id), ("MaskPath", mask_path)):
        if value is None or not is_plain_name(value):
            raise UserError(
                f"{csv_path}, line {line}: {column} {value!r} is not a file name (expected a name in "
                f"{'images/' if column == 'ImageID' else 'masks/'}, without / or ..)"
            )


class OpenImagesDataset(DatasetBase):
    def __init__(self, root: Path, split: str) -> None:
        self.name, self.split, self.root = "openimages", split, str(root)
        split_dir = root / split
        self.image_dir, self.mask_dir = split_dir / "images", split_dir / "masks"
        csv_name = f"{split}-annotations-object-segmentation.csv"
        csv_path = next((path for path in (split_dir / csv_name, root / csv_name) if path.is_file()), None)
        if csv_path is None or not self.image_dir.is_dir():
            raise DatasetLayoutError(
                root, f"expected {split}/images/, {split}/masks/ and {csv_name} (in {split}/ or the root)"
            )
        self._items = sorted(read_mask_lists(csv_path).items())

    def __len__(self) -> int:
        return len(self._items)

    def ids(self) -> list[str]:
        return [image_id for image_id, _ in self._items]

    def _image(self, index: int) -> np.ndarray:
        return read_rgb(self.image_dir / f"{self._items[index][0]}.jpg")

    def _mask(self, mask_name: str, shape: tuple[int, int]) -> np.ndarray:
        mask = read_gray(self.mask_dir / mask_name)
        if mask.shape != shape:
            mask = cv2.resize(mask, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
        return object_and_ignore(mask, ignore_band=False)[0]

    def __getitem__(self, index: int) -> Sample:
        image = self._image(index)
        masks = [self._mask(name, image.shape[:2]) for name in self._items[index][1]]
        labels = paint_instances(masks, image.shape[:2])
        return Sample(id=self._items[index][0], image=image, labels=labels, ignore=np.zeros(labels.shape, bool))

    def instance_counts(self) -> list[int]:
        return [len(masks) for _, masks in self._items]

    def instance_sample(self, index: int, instance: int) -> Sample:
        image_id, mask_names = self._items[index]
        image = self._image(index)
        mask = self._mask(mask_names[instance - 1], image.shape[:2])
        return instance_sample_of(image_id, instance, image, mask)


@register_dataset("openimages")
def _create(root: Path | None, split: str) -> SampleSource:
    return build_source("openimages", root, split, OpenImagesDataset)

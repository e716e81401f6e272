"""Datasets stored as an image folder and a mask folder matched by file stem (Berkeley, DAVIS, COCO_MVal, custom).

Each mask file is one object. A mask named like its image (`12003.png` for `12003.jpg`) belongs to it; with
`numbered_masks`, so does `12003_2.png` (RITM's images_dir convention), which is how several objects share one image.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from isegprobe.data.base import DatasetBase, require_same_size
from isegprobe.data.image_io import IMAGE_SUFFIXES, decode_file, read_gray, read_rgb
from isegprobe.data.instance_maps import paint_instances
from isegprobe.data.sample import Sample
from isegprobe.errors import UserError

# A decoder turns a mask file into (object, ignore) boolean maps.
MaskDecoder = Callable[[Path], tuple[np.ndarray, np.ndarray]]
_NUMBERED = re.compile(r"^(.+)_(\d+)$")


def ritm_binary_mask(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """RITM's GrabCut/Berkeley rule on the first channel: > 128 object, exactly 128 ignored, the rest background."""
    mask = read_gray(path)
    return mask > 128, mask == 128


def any_channel_mask(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """RITM's DAVIS rule: a pixel non-zero in any channel is object; nothing is ignored."""
    mask = decode_file(path, cv2.IMREAD_UNCHANGED, "mask")
    obj = mask.max(axis=2) > 0 if mask.ndim == 3 else mask > 0
    return obj, np.zeros(obj.shape, bool)


@dataclass(frozen=True)
class ImageMasks:
    id: str
    image: Path | None  # None: masks that match no image (reading the item reports them)
    masks: tuple[Path, ...]


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def pair_images_and_masks(image_dir: Path, mask_dir: Path, numbered_masks: bool) -> list[ImageMasks]:
    """Every image with its masks, sorted by id; masks without an image become items of their own."""
    images: dict[str, Path] = {}
    for path in _image_files(image_dir):
        images.setdefault(path.stem, path)
    groups: dict[str, list[tuple[int, Path]]] = {stem: [] for stem in images}
    orphans: dict[str, list[tuple[int, Path]]] = {}
    for mask in _image_files(mask_dir):
        match = _NUMBERED.match(mask.stem) if numbered_masks else None
        if mask.stem in images:
            groups[mask.stem].append((0, mask))
        elif match and match.group(1) in images:
            groups[match.group(1)].append((int(match.group(2)), mask))
        else:
            orphans.setdefault(mask.stem, []).append((0, mask))
    entries = [ImageMasks(stem, images[stem], tuple(p for _, p in sorted(masks))) for stem, masks in groups.items()]
    entries += [ImageMasks(stem, None, tuple(p for _, p in masks)) for stem, masks in orphans.items()]
    return sorted(entries, key=lambda entry: entry.id)


class MaskFolderDataset(DatasetBase):
    """One sample per image with all its mask files painted in name order (see `folder_pairs`)."""

    def __init__(
        self,
        name: str,
        root: Path,
        split: str,
        image_dir: str,
        mask_dir: str,
        decode_mask: MaskDecoder,
        numbered_masks: bool,
    ) -> None:
        self.name, self.split, self.root = name, split, str(root)
        self.image_dir, self.mask_dir = root / image_dir, root / mask_dir
        for folder in (self.image_dir, self.mask_dir):
            if not folder.is_dir():
                layout = f"{image_dir}/ and {mask_dir}/"
                raise UserError(
                    f"--root {root}: expected the {name} layout with {layout} inside; {folder.name}/ not found"
                )
        self.decode_mask = decode_mask
        self._entries = pair_images_and_masks(self.image_dir, self.mask_dir, numbered_masks)
        if not self._entries:
            raise UserError(f"{self.image_dir}: no images found")

    def __len__(self) -> int:
        return len(self._entries)

    def ids(self) -> list[str]:
        return [entry.id for entry in self._entries]

    def _image(self, entry: ImageMasks) -> np.ndarray:
        if entry.image is None:
            raise UserError(f"{entry.masks[0]}: no image named {entry.id}.* in {self.image_dir}")
        if not entry.masks:
            raise UserError(f"{entry.image}: no mask named {entry.id}.* in {self.mask_dir}")
        return read_rgb(entry.image)

    def _mask(self, path: Path, image: np.ndarray, image_path: Path) -> tuple[np.ndarray, np.ndarray]:
        """One object's mask; an empty one is refused, since RITM's metric would score its object as never
        segmented (an IoU of 0/0) and quietly raise the NoC."""
        obj, ignore = self.decode_mask(path)
        require_same_size(path, obj.shape, image_path, image.shape)
        if not obj.any():
            raise UserError(f"{path}: an empty mask (no object pixel); remove it or draw its object")
        return obj, ignore

    def __getitem__(self, index: int) -> Sample:
        entry = self._entries[index]
        image = self._image(entry)
        decoded = [self._mask(path, image, entry.image) for path in entry.masks]
        labels = paint_instances((obj for obj, _ in decoded), image.shape[:2])
        ignore = np.logical_or.reduce([ign for _, ign in decoded]) & (labels == 0)
        return Sample(id=entry.id, image=image, labels=labels, ignore=ignore)

    def instance_counts(self) -> list[int]:
        """One per mask file; an image without masks still counts one, so reading it reports the missing mask."""
        return [max(1, len(entry.masks)) for entry in self._entries]

    def instance_sample(self, index: int, instance: int) -> Sample:
        entry = self._entries[index]
        image = self._image(entry)
        obj, ignore = self._mask(entry.masks[instance - 1], image, entry.image)
        return Sample(id=f"{entry.id}_{instance}", image=image, labels=obj.astype(np.uint16), ignore=ignore & ~obj)

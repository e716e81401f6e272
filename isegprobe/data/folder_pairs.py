"""Datasets stored as an image folder and a mask folder matched by file stem (Berkeley, DAVIS, COCO_MVal, custom).

Each mask file is one object. A mask named like its image (`12003.png` for `12003.jpg`) belongs to it; with
`numbered_masks`, so does `12003_2.png` (RITM's images_dir convention), which is how several objects share one image.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from isegprobe.data.base import DatasetBase, require_same_size
from isegprobe.data.binary_masks import object_and_ignore, ritm_davis_rule, ritm_grabcut_rule
from isegprobe.data.image_headers import png_bit_depth
from isegprobe.data.image_io import (
    IMAGE_SUFFIXES,
    files_by_stem,
    is_hidden,
    only_file,
    read_grey_mask,
    read_mask,
    read_rgb,
    unread_files_named,
)
from isegprobe.data.instance_maps import paint_instances
from isegprobe.data.sample import Sample
from isegprobe.errors import DatasetLayoutError, UserError

# A decoder turns a mask file into (object, ignore) boolean maps.
MaskDecoder = Callable[[Path], tuple[np.ndarray, np.ndarray]]
_NUMBERED = re.compile(r"^(.+)_(\d+)$")


def ritm_grabcut_mask(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Berkeley's masks, as RITM's GrabCut loader reads them (`binary_masks`)."""
    return ritm_grabcut_rule(*read_mask(path))


def ritm_davis_mask(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """DAVIS's and COCO_MVal's masks, as RITM's DAVIS loader reads them (`binary_masks`)."""
    return ritm_davis_rule(*read_mask(path, colour=True))


def banded_mask(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """custom's masks: grey levels, above 128 object, 128 ignored (`binary_masks`); colour or transparency refused."""
    return object_and_ignore(read_grey_mask(path), ignore_band=True)


@dataclass(frozen=True)
class ImageMasks:
    """An item: the files named like its image (one, unless the name is ambiguous; none for masks without an
    image) and, per object, the mask files of that object's name. Reading the item refuses an ambiguous name."""

    id: str
    images: tuple[Path, ...]
    masks: tuple[tuple[Path, ...], ...]


def pair_images_and_masks(image_dir: Path, mask_dir: Path, numbered_masks: bool) -> list[ImageMasks]:
    """Every image with its masks, sorted by id; masks without an image become items of their own. Names are
    compared exactly (see `files_by_stem`)."""
    images = files_by_stem(image_dir)
    masks = files_by_stem(mask_dir)
    groups: dict[str, list[tuple[int, str]]] = {stem: [] for stem in images}
    orphans: dict[str, list[tuple[int, str]]] = {}
    for stem in masks:
        match = _NUMBERED.match(stem) if numbered_masks else None
        if stem in images:
            groups[stem].append((0, stem))
        elif match and match.group(1) in images:
            groups[match.group(1)].append((int(match.group(2)), stem))
        else:
            orphans.setdefault(stem, []).append((0, stem))
    entries = [
        ImageMasks(stem, tuple(images.get(stem, ())), tuple(tuple(masks[name]) for _, name in sorted(objects)))
        for stem, objects in (*groups.items(), *orphans.items())
    ]
    return sorted(entries, key=lambda entry: entry.id)


class UnreadSubfolderWarning(UserWarning):
    """Images sit in subfolders of a folder dataset's image or mask folder, which is read one level deep."""


def _warn_of_images_in_subfolders(folder: Path) -> None:
    """A folder dataset reads the files directly in its image and mask folders; images sorted into subfolders
    (`images/cats/`, `images/dogs/`) were left out without a word, and the benchmark held only the rest."""
    holding = [
        child.name
        for child in sorted(folder.iterdir())
        if child.is_dir() and not is_hidden(child) and _holds_images(child)
    ]
    if holding:
        warnings.warn(
            f"{folder}: its subfolders {', '.join(name + '/' for name in holding[:5])} hold images, which are not "
            f"read: only the files directly in {folder.name}/ are (a COCO-format JSON's file_name may name "
            "subfolders)",
            UnreadSubfolderWarning,
            stacklevel=3,
        )


def _holds_images(folder: Path) -> bool:
    try:
        return any(path.suffix.lower() in IMAGE_SUFFIXES and not is_hidden(path) for path in folder.iterdir())
    except OSError:  # a subfolder this user may not list is no images of the dataset's either
        return False


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
                raise DatasetLayoutError(
                    root, f"expected the {name} layout with {layout} inside; {folder.name}/ not found"
                )
        self.decode_mask = decode_mask
        for folder in (self.image_dir, self.mask_dir):
            _warn_of_images_in_subfolders(folder)
        self._entries = pair_images_and_masks(self.image_dir, self.mask_dir, numbered_masks)
        if not self._entries:
            raise UserError(f"{self.image_dir}: no images found")

    def __len__(self) -> int:
        return len(self._entries)

    def ids(self) -> list[str]:
        return [entry.id for entry in self._entries]

    def _image(self, entry: ImageMasks) -> tuple[Path, np.ndarray]:
        """(path, pixels) of the item's image, once its name is known to pick one image and its masks."""
        if not entry.images:
            raise UserError(
                f"{entry.masks[0][0]}: no image named {entry.id}.* in {self.image_dir}"
                + unread_files_named(self.image_dir, entry.id)
            )
        path = only_file(entry.images, "image")
        if not entry.masks:
            raise UserError(
                f"{path}: no mask named {entry.id}.* in {self.mask_dir}" + unread_files_named(self.mask_dir, entry.id)
            )
        for candidates in entry.masks:
            only_file(candidates, "mask")
        return path, read_rgb(path)

    def _mask(self, candidates: tuple[Path, ...], image: np.ndarray, image_path: Path) -> tuple[np.ndarray, np.ndarray]:
        """One object's mask; an empty one is refused, since RITM's metric would score its object as never
        segmented (an IoU of 0/0) and quietly raise the NoC."""
        path = only_file(candidates, "mask")
        obj, ignore = self.decode_mask(path)
        require_same_size(path, obj.shape, image_path, image.shape)
        if not obj.any():
            raise UserError(
                f"{path}: an empty mask (no object pixel){_sixteen_bit_note(path)}; remove it or draw its object"
            )
        return obj, ignore

    def __getitem__(self, index: int) -> Sample:
        entry = self._entries[index]
        image_path, image = self._image(entry)
        decoded = [self._mask(candidates, image, image_path) for candidates in entry.masks]
        labels = paint_instances((obj for obj, _ in decoded), image.shape[:2])
        if int(labels.max()) < len(decoded):
            self._refuse_hidden_objects(entry, [obj for obj, _ in decoded], image_path)
        ignore = np.logical_or.reduce([ign for _, ign in decoded]) & (labels == 0)
        return Sample(id=entry.id, image=image, labels=labels, ignore=ignore)

    def _refuse_hidden_objects(self, entry: ImageMasks, objects: list[np.ndarray], image_path: Path) -> None:
        """An object that later masks of its image cover whole would vanish from the label map, and from every
        evaluation, without a word: name it instead."""
        covered = np.zeros_like(objects[0])
        for number in range(len(objects), 0, -1):
            if not (objects[number - 1] & ~covered).any():
                hidden = only_file(entry.masks[number - 1], "mask")
                later = ", ".join(only_file(candidates, "mask").name for candidates in entry.masks[number:])
                raise UserError(
                    f"{hidden}: its object lies wholly under later masks of the image {image_path.name} ({later}), "
                    "and an image's objects are painted into one label map, later on top; read --split "
                    f"{self.split}-instances (one sample per mask, overlaps kept) or draw the objects apart"
                )
            covered |= objects[number - 1]

    def instance_counts(self) -> list[int]:
        """One per mask file; an image without masks still counts one, so reading it reports the missing mask."""
        return [max(1, len(entry.masks)) for entry in self._entries]

    def instance_sample(self, index: int, instance: int) -> Sample:
        entry = self._entries[index]
        image_path, image = self._image(entry)
        obj, ignore = self._mask(entry.masks[instance - 1], image, image_path)
        return Sample(id=f"{entry.id}_{instance}", image=image, labels=obj.astype(np.uint16), ignore=ignore & ~obj)


def _sixteen_bit_note(path: Path) -> str:
    """Why a 16-bit PNG mask can read as empty: its samples are scaled to 8 bits as OpenCV reads colour (RITM's
    rule), so an object drawn at 255 of 65535 becomes 0."""
    with open(path, "rb") as file:
        if png_bit_depth(file.read(25)) != 16:
            return ""
    return (
        " as read: it is a 16-bit PNG, whose values are scaled to 8 bits (255 of 65535 becomes 0); save it with "
        "8-bit samples"
    )

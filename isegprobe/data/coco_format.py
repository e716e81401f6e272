"""Images described by a COCO-style JSON (`images`, `annotations` with polygons or RLE): MS COCO, LVIS, custom.

Crowd annotations are left out, as RITM does (their pixels are background). Images without any other annotation are
left out too. Per image, objects are painted in annotation order, later on top; the `-instances` split gives every
annotation its own exact mask.
"""

from __future__ import annotations

import json
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from isegprobe.data.base import DatasetBase, instance_sample_of, require_same_size
from isegprobe.data.image_io import read_rgb
from isegprobe.data.instance_maps import paint_instances
from isegprobe.data.sample import Sample
from isegprobe.errors import UserError


def load_json(path: Path) -> dict[str, Any]:
    """The COCO-format document at `path`. JSON is UTF-8 text whatever the machine's locale (open's default read
    file names as cp1252 on Windows); a byte-order mark that a Windows editor put first is read past, as in the
    split lists, where json refused it."""
    try:
        with open(path, encoding="utf-8-sig") as file:
            data = json.load(file)
    except FileNotFoundError:
        raise UserError(f"{path}: annotation file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: not valid JSON ({error})") from None
    except RecursionError:  # nested deeper than the parser goes: no COCO-format file is
        raise UserError(f"{path}: not a COCO-format JSON (nested too deep to read)") from None
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("images"), list)
        or not isinstance(data.get("annotations"), list)
    ):
        raise UserError(f"{path}: expected a COCO-format JSON with 'images' and 'annotations' lists")
    return data


def _is_crowd(annotation: dict[str, Any], annotation_file: Path) -> bool:
    """COCO's `iscrowd`, 0 or 1 (absent: 0); any other value is refused, since a string "0" would be true."""
    crowd = annotation.get("iscrowd", 0)
    if isinstance(crowd, bool) or not isinstance(crowd, int | float) or crowd not in (0, 1):
        raise UserError(
            f"{annotation_file}: annotation {annotation.get('id')!r}: iscrowd must be the number 0 or 1, got {crowd!r}"
        )
    return crowd == 1


def _check_image(image: dict[str, Any], name: Any, annotation_file: Path) -> None:
    """An `images` entry must name its file by text (`name`, its file_name or the like) and give its height and
    width as positive whole numbers."""
    height, width = image["height"], image["width"]
    if not isinstance(name, str) or not name:
        raise UserError(f"{annotation_file}: image {image['id']!r}: file_name must be a file's name, got {name!r}")
    for key, value in (("height", height), ("width", width)):
        whole = isinstance(value, int) or isinstance(value, float) and value.is_integer()
        if isinstance(value, bool) or not whole or not 1 <= value < 2**31:
            raise UserError(f"{annotation_file}: image {name!r}: {key} must be a whole number of pixels, got {value!r}")


def _refuse_shared_image_ids(images: list[dict[str, Any]], annotation_file: Path) -> None:
    """Annotations name their image by id: two images of one id would each get the other's objects."""
    first_of: dict[Any, dict[str, Any]] = {}
    for image in images:
        other = first_of.setdefault(image["id"], image)
        if other is not image:
            raise UserError(
                f"{annotation_file}: the images {other.get('file_name')!r} and {image.get('file_name')!r} have one id, "
                f"{image['id']!r}, and annotations name their image by it: give each image its own id"
            )


def _why_no_image(data: dict[str, Any], annotation_file: Path) -> str:
    """Why a COCO-format file yields no sample, for the error that says so."""
    images, annotations = data["images"], data["annotations"]
    if not images:
        return "its images list is empty"
    if not annotations:
        return "its annotations list is empty"
    plain = [annotation for annotation in annotations if not _is_crowd(annotation, annotation_file)]
    if not plain:
        return "every annotation is a crowd one (iscrowd 1), which is left out as RITM leaves it"
    return (
        f"no annotation's image_id is an image's id (images' ids such as {images[0].get('id')!r}, annotations' "
        f"image_id such as {plain[0].get('image_id')!r}: they must be the same values, of the same type)"
    )


MIN_POLYGON_NUMBERS = 6  # three points, x and y each


def coco_annotation_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """bool [H, W] from COCO polygons, uncompressed RLE or compressed RLE, rasterized by pycocotools as COCO does."""
    try:
        from pycocotools import mask as mask_utils
    except ImportError:
        raise UserError("reading COCO-format annotations needs pycocotools: pip install pycocotools") from None
    if isinstance(segmentation, list):
        check_polygons(segmentation, height, width)
        # pycocotools paints no pixel for a polygon of fewer than 3 points, but takes a first one of 2 points for a
        # box and fails, and fails on an empty list: such polygons are left out, an annotation of none painting none
        polygons = [polygon for polygon in segmentation if len(polygon) >= MIN_POLYGON_NUMBERS]
        if not polygons:
            return np.zeros((height, width), bool)
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    elif isinstance(segmentation, dict):
        if segmentation.get("size") != [height, width]:
            raise ValueError(f"its RLE's size is {segmentation.get('size')!r}, the image's [{height}, {width}]")
        check_rle_counts(segmentation.get("counts"), height, width)
        rle = (
            mask_utils.frPyObjects(segmentation, height, width)
            if isinstance(segmentation["counts"], list)
            else segmentation
        )
    else:
        expected = "a list of polygons or an RLE {'size': [h, w], 'counts': ...}"
        raise ValueError(f"a segmentation is {expected}, got {segmentation!r:.80}")
    return mask_utils.decode(rle).astype(bool)


def check_rle_counts(counts: Any, height: int, width: int) -> None:
    """An RLE's runs must be whole numbers from 0 that cover the image exactly: pycocotools decodes runs that stop
    short as background to the end, and an empty compressed string as whatever its buffer held (most of the image
    object), so counts written for another image size, or cut off, made a wrong mask without a word."""
    if isinstance(counts, list):
        if not all(isinstance(run, int) and not isinstance(run, bool) and run >= 0 for run in counts):
            raise ValueError(f"an uncompressed RLE's counts must be whole numbers from 0, got {counts!r:.80}")
        runs = counts
    elif isinstance(counts, str):
        runs = _compressed_runs(counts)
        if runs is None or (runs < 0).any():
            raise ValueError(f"its compressed RLE counts {counts!r:.80} are not COCO's run-length encoding")
    else:
        raise ValueError(f"an RLE's counts must be a list of runs or COCO's compressed string, got {counts!r:.80}")
    covered = int(sum(runs))
    if covered != height * width:
        raise ValueError(
            f"its RLE's runs cover {covered} pixels, the image's [{height}, {width}] {height * width}: counts made "
            "for another image, or cut off"
        )


# Characters of a run in COCO's compressed RLE beyond which its value passes any image's pixel count (35 bits).
_MOST_RUN_CHARACTERS = 7


def _compressed_runs(text: str) -> np.ndarray | None:
    """The runs of COCO's compressed RLE string, as pycocotools' rleFrString reads it: each run is 5-bit groups,
    least significant first, offset by 48, bit 0x20 saying another group follows and bit 0x10 of the last one the
    sign; from the fourth run on, each is a difference from the run two before. None for a string that ends inside a
    run, holds a character outside the encoding, or a run longer than any image. Read with array operations: a
    Python loop over the characters took twice the time of decoding the mask."""
    try:
        codes = np.frombuffer(text.encode("ascii"), np.uint8).astype(np.int64) - 48
    except UnicodeEncodeError:
        return None
    if not codes.size:
        return codes
    last = (codes & 0x20) == 0  # the last character of each run
    if ((codes < 0) | (codes >= 64)).any() or not last[-1]:
        return None
    starts = np.flatnonzero(np.concatenate(([True], last[:-1])))
    run_of = np.cumsum(np.concatenate(([0], last[:-1])))
    place = np.arange(codes.size) - starts[run_of]  # which 5-bit group of its run a character is
    if int(place.max()) >= _MOST_RUN_CHARACTERS:
        return None
    groups = (codes & 0x1F) << (5 * place)
    groups[last & (codes & 0x10 != 0)] -= 1 << (5 * (place[last & (codes & 0x10 != 0)] + 1))  # sign extension
    runs = np.add.reduceat(groups, starts)
    runs[1::2] = np.cumsum(runs[1::2])
    runs[2::2] = np.cumsum(runs[2::2])
    return runs


def check_polygons(segmentation: list[Any], height: int, width: int) -> None:
    """Polygons must be lists of numbers, each x within a width of the image's sides and each y within a height:
    rasterizing walks every edge pixel by pixel, so a coordinate of 1e300 (or NaN) took all memory and the process
    with it. Polygons of real datasets lie on their images, give or take a pixel. An odd count of numbers is an x
    without its y, which pycocotools dropped without a word."""
    for polygon in segmentation:
        if not isinstance(polygon, list) or not all(
            isinstance(value, int | float) and not isinstance(value, bool) for value in polygon
        ):
            raise ValueError(f"a polygon must be a list of numbers x0, y0, x1, y1, ..., got {polygon!r:.80}")
        if len(polygon) % 2:
            raise ValueError(f"a polygon is pairs of numbers x, y, got {len(polygon)} numbers: {polygon!r:.80}")
        xs, ys = np.asarray(polygon[0::2], np.float64), np.asarray(polygon[1::2], np.float64)
        if not (np.all((-width <= xs) & (xs <= 2 * width)) and np.all((-height <= ys) & (ys <= 2 * height))):
            raise ValueError(
                f"polygon coordinates must be finite, x within [{-width}, {2 * width}] and y within "
                f"[{-height}, {2 * height}] for this {width} x {height} image, got {polygon!r:.80}"
            )


def _warn_of_annotations_of_no_image(
    by_image: dict[Any, list[dict[str, Any]]], images: list[dict[str, Any]], annotation_file: Path
) -> None:
    """Annotations whose image_id no image has are left out, as RITM's loaders leave them; said, since they are most
    often a file's mistake (ids written as text in one list and as numbers in the other) that would otherwise make
    a benchmark of fewer objects without a word. Where no annotation names an image, the file is refused instead."""
    known = {image["id"] for image in images}
    orphans = [image_id for image_id in by_image if image_id not in known]
    if not orphans or len(orphans) == len(by_image):
        return
    count = sum(len(by_image[image_id]) for image_id in orphans)
    warnings.warn(
        f"{annotation_file}: {count} annotation(s) name an image_id that no image has (such as {orphans[0]!r}; "
        f"images' ids such as {images[0]['id']!r}) and are left out; ids must be the same values, of the same type",
        OrphanAnnotationWarning,
        stacklevel=4,
    )


class OrphanAnnotationWarning(UserWarning):
    """Some annotations name an image the file does not list, so their objects are not evaluated or trained on."""


class UnpaintedAnnotationWarning(UserWarning):
    """Some annotations of an image paint no pixel of their own, so the image has fewer objects than annotations."""


class AnnotatedImagesDataset(DatasetBase):
    """One sample per image that has at least one (non-crowd) annotation, in the JSON's image order."""

    max_overlap_ratio: float | None = None
    _told_of_unpainted = False

    def __init__(self, name: str, root: Path, split: str, annotation_file: Path, image_dirs: list[Path]) -> None:
        self.name, self.split, self.root = name, split, str(root)
        self.annotation_file = annotation_file
        self.image_dirs = image_dirs
        data = load_json(annotation_file)
        by_image: dict[Any, list[dict[str, Any]]] = defaultdict(list)
        try:
            for index, annotation in enumerate(data["annotations"]):
                if not isinstance(annotation, dict):
                    raise UserError(
                        f"{annotation_file}: annotation {index} (from 0): expected an object, got {annotation!r:.80}"
                    )
                if not _is_crowd(annotation, annotation_file):
                    by_image[annotation["image_id"]].append(
                        {"id": annotation.get("id"), "segmentation": annotation["segmentation"]}
                    )
            _refuse_shared_image_ids(data["images"], annotation_file)
            _warn_of_annotations_of_no_image(by_image, data["images"], annotation_file)
            self._images = [image for image in data["images"] if by_image.get(image["id"])]
            for image in self._images:
                _check_image(image, self._file_name(image), annotation_file)
            self._annotations = [by_image[image["id"]] for image in self._images]
            self._ids = [self._sample_id(image) for image in self._images]
            self._sizes = [(int(image["height"]), int(image["width"])) for image in self._images]
        except KeyError as error:
            raise UserError(f"{annotation_file}: an image or annotation entry lacks its {error} field") from None
        except (TypeError, ValueError) as error:
            raise UserError(
                f"{annotation_file}: an image or annotation entry holds a value of the wrong kind ({error})"
            ) from None
        if not self._images:
            raise UserError(
                f"{annotation_file}: no image has an annotation to segment: {_why_no_image(data, annotation_file)}"
            )
        self._refuse_shared_ids()

    def _refuse_shared_ids(self) -> None:
        """Two images whose ids are equal (`a.jpg` and `a.png`, `sub/b.jpg` and `sub__b.jpg`, one image listed twice)
        would be one item of a store and one row of the results, silently: the first such pair is named instead."""
        first_of: dict[str, dict[str, Any]] = {}
        for image, sample_id in zip(self._images, self._ids, strict=True):
            other = first_of.setdefault(sample_id, image)
            if other is not image:
                raise UserError(
                    f"{self.annotation_file}: the images {other['file_name']!r} (id {other['id']}) and "
                    f"{image['file_name']!r} (id {image['id']}) would both be item {sample_id!r} (an item's id is its "
                    "file name without the extension, folders joined by '__'): list each image once, and rename one "
                    "of two files that differ only so"
                )

    def _file_name(self, image: dict[str, Any]) -> str:
        return image["file_name"]

    def _sample_id(self, image: dict[str, Any]) -> str:
        return Path(self._file_name(image)).with_suffix("").as_posix().replace("/", "__")

    def _image_path(self, image: dict[str, Any]) -> Path:
        file_name = self._file_name(image)
        for folder in self.image_dirs:
            if (folder / file_name).is_file():
                return folder / file_name
        raise UserError(
            f"{file_name}: image of {self.annotation_file.name} not found in {', '.join(map(str, self.image_dirs))}"
        )

    def _mask(self, annotation: dict[str, Any], height: int, width: int) -> np.ndarray:
        return coco_annotation_mask(annotation["segmentation"], height, width)

    def __len__(self) -> int:
        return len(self._images)

    def ids(self) -> list[str]:
        return self._ids

    def _read_image(self, index: int) -> np.ndarray:
        path = self._image_path(self._images[index])
        image = read_rgb(path)
        require_same_size(self.annotation_file, self._sizes[index], path, image.shape)
        return image

    def _masks(self, index: int, annotations: list[dict[str, Any]], shape: tuple[int, int]) -> list[np.ndarray]:
        masks = []
        for annotation in annotations:
            try:
                masks.append(self._mask(annotation, *shape))
            except UserError:
                raise
            except Exception as error:  # malformed polygons or RLE; name the annotation
                where = f"annotation {annotation['id']} of image {self._ids[index]}"
                raise UserError(f"{self.annotation_file}: {where}: bad segmentation ({error})") from None
        return masks

    def __getitem__(self, index: int) -> Sample:
        image = self._read_image(index)
        masks = self._masks(index, self._annotations[index], image.shape[:2])
        labels = paint_instances(masks, image.shape[:2], self.max_overlap_ratio)
        if self.max_overlap_ratio is None:  # LVIS's rule drops overlapping masks on purpose, as RITM does
            self._tell_of_unpainted(index, len(masks) - int(labels.max(initial=0)))
        return Sample(id=self._ids[index], image=image, labels=labels, ignore=np.zeros(labels.shape, bool))

    def _tell_of_unpainted(self, index: int, unpainted: int) -> None:
        """Warn, for the first image only, that some of its annotations are no object: one that is empty (a polygon
        of no area) or wholly under later ones paints no pixel, so it cannot be clicked on or evaluated, and the
        image's objects are fewer than its annotations. A custom folder refuses such masks; annotation files made by
        labelling tools hold them often enough that a refusal would leave whole datasets unusable."""
        if unpainted <= 0 or self._told_of_unpainted:
            return
        self._told_of_unpainted = True
        annotations = self._annotations[index]
        warnings.warn(
            f"{self.annotation_file}: image {self._ids[index]!r}: {unpainted} of its {len(annotations)} annotations "
            "paint no pixel of their own (empty, or wholly under later ones) and are left out of its objects; "
            "further images with such annotations are not named",
            UnpaintedAnnotationWarning,
            stacklevel=3,
        )

    def instance_counts(self) -> list[int]:
        return [len(annotations) for annotations in self._annotations]

    def instance_sample(self, index: int, instance: int) -> Sample:
        image = self._read_image(index)
        (mask,) = self._masks(index, [self._annotations[index][instance - 1]], image.shape[:2])
        return instance_sample_of(self._ids[index], instance, image, mask)

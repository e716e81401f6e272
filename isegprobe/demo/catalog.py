"""The images the demo lists: image files (no ground truth) or a registered dataset's samples (with it).

A catalog answers `names()` and `read(name)`; `read` gives the RGB pixels and, for a dataset, the sample with its
instance map and ignore region, so the page can show the IoU that evaluation would count.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from isegprobe.data import create_dataset, dataset_root, root_origin_told
from isegprobe.data.image_io import IMAGE_SUFFIXES, is_hidden, read_rgb, require_utf8_name
from isegprobe.data.registry import SampleSource
from isegprobe.data.sample import Sample
from isegprobe.errors import UserError


class Catalog(Protocol):
    def names(self) -> list[str]: ...

    def read(self, name: str) -> tuple[np.ndarray, Sample | None]: ...


class ImageCatalog:
    """Every image file in a folder (sorted), or one file."""

    def __init__(self, paths: list[Path]) -> None:
        # A name is the image's id on the page, sent in every JSON answer: one that is not UTF-8 cannot be, and the
        # server would start and then fail every request. The dataset loaders refuse such a name by the same rule.
        for path in paths:
            require_utf8_name(path)
        self.paths = {path.name: path for path in paths}

    @classmethod
    def from_options(cls, images: str | None, image: str | None) -> ImageCatalog:
        if image is not None:
            if Path(image).suffix.lower() not in IMAGE_SUFFIXES:
                raise UserError(f"--image {image}: not an image file ({', '.join(IMAGE_SUFFIXES)})")
            return cls([Path(image)])
        if images is None:
            return cls([])
        folder = Path(images)
        files = sorted(
            path
            for path in folder.iterdir()
            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file() and not is_hidden(path)
        )
        if not files:
            raise UserError(f"--images {folder}: no image files ({', '.join(IMAGE_SUFFIXES)}) in it")
        return cls(files)

    def names(self) -> list[str]:
        return list(self.paths)

    def read(self, name: str) -> tuple[np.ndarray, Sample | None]:
        if name not in self.paths:
            raise UserError(f"no image {name!r} in the list")
        return read_rgb(self.paths[name]), None


class DatasetCatalog:
    """The samples of a registered dataset, listed by id, each with its ground truth."""

    def __init__(self, source: SampleSource) -> None:
        self.source = source
        self.index = {sample_id: index for index, sample_id in enumerate(source.ids())}

    @classmethod
    def from_options(cls, dataset: str, root: str | None, split: str) -> DatasetCatalog:
        with root_origin_told(dataset, root):
            source = create_dataset(dataset, dataset_root(dataset, root), split)
        if len(source) == 0:
            raise UserError(f"--dataset {dataset} --split {split}: no samples under {source.root}")
        return cls(source)

    def names(self) -> list[str]:
        return list(self.index)

    def read(self, name: str) -> tuple[np.ndarray, Sample | None]:
        if name not in self.index:
            raise UserError(f"no image {name!r} in {self.source.name}/{self.source.split}")
        sample = self.source[self.index[name]]
        return sample.image, sample

"""ADE20K, in either of the layouts people have (found by looking at the root):

- the full release (`ADE20K_2016_07_26`, as RITM uses it): `images/{training,validation}/<letter>/<scene>/
  ADE_*.jpg` beside `ADE_*_seg.png`, whose blue channel numbers the object instances (0 unlabelled). RITM reads the
  same channel; it also picks, per step, a random part level and drops stuff classes from a pickle of its own, which
  is not public, so here every whole-object instance counts and parts are not used.
- the scene-parsing challenge (`ADEChallengeData2016`, as SimpleClick uses it): `images/{training,validation}/*.jpg`
  and `annotations/{training,validation}/*.png` class maps; each class present (1..150) is one object.

Split `train` reads `training`, `val` (and `test`) read `validation`.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from isegprobe.data.base import DatasetBase, build_source, require_same_size
from isegprobe.data.image_io import decode_file, is_hidden, read_gray, read_rgb
from isegprobe.data.instance_maps import compact_labels
from isegprobe.data.registry import SampleSource, register_dataset
from isegprobe.data.sample import Sample
from isegprobe.errors import DatasetLayoutError, UserError

SPLIT_FOLDERS = {"train": "training", "val": "validation"}
SEG_SUFFIX = "_seg.png"


def read_instance_channel(path: Path) -> np.ndarray:
    """The blue channel of an ADE20K `_seg.png` (OpenCV's channel 0)."""
    return decode_file(path, cv2.IMREAD_COLOR, "mask")[..., 0]


class ADE20kDataset(DatasetBase):
    def __init__(self, root: Path, split: str) -> None:
        self.name, self.split, self.root = "ade20k", split, str(root)
        folder = SPLIT_FOLDERS[split]
        self.image_dir = root / "images" / folder
        if not self.image_dir.is_dir():
            raise DatasetLayoutError(root, f"expected ADE20K's images/{folder}/ inside, not found")
        self.challenge_layout = (root / "annotations").is_dir()
        if self.challenge_layout:
            self.mask_dir = root / "annotations" / folder
            # .jpg in any case, as GrabCut's loader reads them: a `.JPG` image and its annotation were left out
            images = sorted(
                path for path in self.image_dir.iterdir() if path.suffix.lower() == ".jpg" and not is_hidden(path)
            )
            self._pairs = [(path, self.mask_dir / f"{path.stem}.png") for path in images]
        else:
            seg_files = sorted(path for path in self.image_dir.rglob(f"*{SEG_SUFFIX}") if not is_hidden(path))
            self._pairs = [(p.with_name(p.name[: -len(SEG_SUFFIX)] + ".jpg"), p) for p in seg_files]
        if not self._pairs:
            raise UserError(f"{self.image_dir}: no ADE20K images found")
        self._uncounted: list[str] = []  # why `instance_counts` counted some masks one

    def __len__(self) -> int:
        return len(self._pairs)

    def ids(self) -> list[str]:
        return [image.stem for image, _ in self._pairs]

    def _values(self, mask_path: Path) -> np.ndarray:
        return read_gray(mask_path) if self.challenge_layout else read_instance_channel(mask_path)

    def __getitem__(self, index: int) -> Sample:
        image_path, mask_path = self._pairs[index]
        image = read_rgb(image_path)
        values = self._values(mask_path)
        require_same_size(mask_path, values.shape, image_path, image.shape)
        labels = compact_labels(values)
        return Sample(id=image_path.stem, image=image, labels=labels, ignore=np.zeros(labels.shape, bool))

    def instance_counts(self) -> list[int]:
        """Reads the masks only; an unreadable one counts one so that reading its item reports it."""
        self._uncounted = []
        return [self._count(mask_path) for _, mask_path in self._pairs]

    def _count(self, mask_path: Path) -> int:
        try:
            return int(np.count_nonzero(np.unique(self._values(mask_path))))
        except UserError as error:
            self._uncounted.append(str(error))
            return 1

    def uncounted(self) -> list[str]:
        return self._uncounted


@register_dataset("ade20k")
def _create(root: Path | None, split: str) -> SampleSource:
    return build_source("ade20k", root, split, ADE20kDataset)

"""SBD (Hariharan et al. 2011), the field's training set and one of its test sets.

Layout (`benchmark_RELEASE/dataset` of the official archive): `img/<name>.jpg`, `inst/<name>.mat` whose
`GTinst.Segmentation` holds instance ids (0 background), and `train.txt` / `val.txt` listing the names.
Split `val` yields the 2857 images with all their instances; `val-instances` the 6671 one-object samples RITM's
SBDEvaluationDataset evaluates. SBD instances never overlap, so both give the same masks.

RITM's loader filter is a keyword (set in configs/datasets.yaml): `buggy_mask_threshold` drops objects covering less
than that share of their bounding box (RITM: 0.08), at the image's own resolution. RITM's other training filters act
on its random crops, so they belong to training, not to the loader: `min_object_area` (80 pixels) makes a smaller
object of a crop no target while its pixels stay labelled (an "other" region for the negative clicks, not
background), which is `sampler.min_object_area`; `keep_background_prob` is `data.keep_background_prob`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from isegprobe.data.base import NameListDataset, build_source, require_same_size
from isegprobe.data.image_io import read_rgb
from isegprobe.data.instance_maps import compact_labels, ids_present
from isegprobe.data.registry import SampleSource, register_dataset
from isegprobe.data.sample import Sample
from isegprobe.errors import DatasetLayoutError, UserError


def read_sbd_instances(path: Path) -> np.ndarray:
    """`GTinst.Segmentation` of one SBD .mat file, as int32 [H, W]."""
    try:
        from scipy.io import loadmat
    except ImportError:
        raise UserError("reading SBD needs scipy: pip install scipy") from None
    try:
        segmentation = loadmat(str(path), squeeze_me=True, struct_as_record=False)["GTinst"].Segmentation
    except FileNotFoundError:
        raise UserError(f"{path}: instance file not found") from None
    except Exception as error:  # scipy raises many types for a damaged file; the user needs the file name
        raise UserError(f"{path}: cannot read GTinst.Segmentation ({type(error).__name__}: {error})") from None
    values = np.asarray(segmentation)
    numbers = values.ndim == 2 and (values.dtype == bool or np.issubdtype(values.dtype, np.integer))
    if not numbers or (values.size and not 0 <= int(values.min()) <= int(values.max()) < 2**31):
        shown = f"{values.dtype} {values.shape}" if not numbers else f"values {values.min()} to {values.max()}"
        raise UserError(f"{path}: GTinst.Segmentation must be a 2-D map of instance numbers from 0, got {shown}")
    return values.astype(np.int32)


def _box_fill_ratio(mask: np.ndarray) -> float:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    box_area = (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)
    return float(mask.sum()) / box_area


class SBDDataset(NameListDataset):
    def __init__(self, root: Path, split: str, buggy_mask_threshold: float = 0.0) -> None:
        self.name, self.split, self.root = "sbd", split, str(root)
        self.image_dir, self.inst_dir = root / "img", root / "inst"
        list_file = root / f"{split}.txt"
        for needed in (self.image_dir, self.inst_dir, list_file):
            if not needed.exists():
                raise DatasetLayoutError(
                    root, f"expected SBD's img/, inst/ and {split}.txt inside; {needed.name} not found"
                )
        super().__init__(list_file)
        self.buggy_mask_threshold = buggy_mask_threshold

    def _labels(self, name: str) -> np.ndarray:
        """The item's instance map, RITM's filter applied. With the filter off (SBD val, which evaluation reads, and
        any split configured without it) no object can be dropped, so none is looked at: that was 1 ms of a loader
        worker's time per image."""
        labels = read_sbd_instances(self.inst_dir / f"{name}.mat")
        if self.buggy_mask_threshold > 0:
            for instance in np.flatnonzero(ids_present(labels)[1:]) + 1:
                mask = labels == instance
                if _box_fill_ratio(mask) < self.buggy_mask_threshold:
                    labels[mask] = 0
        return compact_labels(labels)

    def __getitem__(self, index: int) -> Sample:
        name = self._names[index]
        image_path = self.image_dir / f"{name}.jpg"
        image = read_rgb(image_path)
        labels = self._labels(name)
        require_same_size(self.inst_dir / f"{name}.mat", labels.shape, image_path, image.shape)
        return Sample(id=name, image=image, labels=labels, ignore=np.zeros(labels.shape, bool))

    def count_instances(self, name: str) -> int:
        """The instances the filters keep; counting all of val reads its 2857 .mat files in a few seconds."""
        return int(self._labels(name).max())


@register_dataset("sbd")
def _create(root: Path | None, split: str) -> SampleSource:
    return build_source("sbd", root, split, SBDDataset)

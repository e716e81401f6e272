"""What the dataset families share: the per-image base class, the per-instance view, and the registry factory.

A family's split (`val`) yields one `Sample` per image holding all its instances, painted later-on-top: features are
cached once per image. Adding `-instances` to the split (`val-instances`) yields one `Sample` per annotated instance,
labels 0/1, id `<image id>_<k>`: the exact mask even where instances overlap, and the item counts the papers report
(SBD val: 2857 images, 6671 instance samples).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from isegprobe.data.catalog import dataset_facts
from isegprobe.data.registry import SampleSource
from isegprobe.data.roots import dataset_options, options_source, require_root
from isegprobe.data.sample import Sample
from isegprobe.errors import UserError

INSTANCES_SUFFIX = "-instances"


def parse_split(split: str) -> tuple[str, bool]:
    """`val-instances` -> (`val`, True); `val` -> (`val`, False)."""
    if split.endswith(INSTANCES_SUFFIX) and len(split) > len(INSTANCES_SUFFIX):
        return split[: -len(INSTANCES_SUFFIX)], True
    return split, False


def instance_id(image_id: str, instance: int) -> str:
    return f"{image_id}_{instance}"


def instance_sample_of(
    image_id: str, instance: int, image: np.ndarray, mask: np.ndarray, ignore: np.ndarray | None = None
) -> Sample:
    """Instance `instance` (from 1) of image `image_id` as its own sample: labels 0/1, id `<image id>_<k>`, and the
    image's ignore region (none when not given) minus the object."""
    ignore = np.zeros(mask.shape, bool) if ignore is None else ignore & ~mask
    return Sample(id=instance_id(image_id, instance), image=image, labels=mask.astype(np.uint16), ignore=ignore)


def one_instance(
    sample: Sample, instance: int, mask: np.ndarray | None = None, ignore: np.ndarray | None = None
) -> Sample:
    """A copy of `sample` holding only one object (labels 0/1); the image's ignore region stays, minus the object."""
    mask = sample.labels == instance if mask is None else mask
    return instance_sample_of(sample.id, instance, sample.image, mask, sample.ignore if ignore is None else ignore)


class DatasetBase:
    """One sample per image. Subclasses define `__len__`, `ids` and `__getitem__`; the rest has fallbacks.

    `instance_counts` and `instance_sample` let `PerInstanceSource` expose one sample per instance; families whose
    instances can overlap override `instance_sample` to return the exact mask instead of the painted one.
    """

    name: str
    split: str
    root: str

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, index: int) -> Sample:
        raise NotImplementedError

    def ids(self) -> Sequence[str]:
        raise NotImplementedError

    def image_id(self, index: int) -> str:
        return self.ids()[index]

    def instance_counts(self) -> list[int]:
        """Instances per image, in the order `instance_sample` numbers them; this fallback reads every image."""
        return [self[index].num_instances for index in range(len(self))]

    def instance_sample(self, index: int, instance: int) -> Sample:
        return one_instance(self[index], instance)

    def uncounted(self) -> list[str]:
        """Why `instance_counts` could not count some images' instances (each counted one): none by default."""
        return []


class NameListDataset(DatasetBase):
    """Images named by a split file, one name per line (SBD's `val.txt`, VOC's `ImageSets/Segmentation/val.txt`).

    Subclasses say how many instances one image's annotation holds (`count_instances`); counting reads every
    annotation once, not the images, and an annotation that cannot be read counts one instance, so that reading
    that item reports the file.
    """

    def __init__(self, list_file: Path) -> None:
        try:
            # utf-8-sig: a byte-order mark that an editor put first would be read as part of the first name
            lines = list_file.read_text(encoding="utf-8-sig").splitlines()
        except UnicodeDecodeError:
            raise UserError(f"{list_file}: not a text file of image names, one per line") from None
        self._names = [line.strip() for line in lines if line.strip()]
        if not self._names:
            raise UserError(f"{list_file}: lists no image (one image name per line)")
        _refuse_paths_as_names(list_file, lines)
        _refuse_names_listed_twice(list_file, lines)
        self._counts: list[int] | None = None
        self._uncounted: list[str] = []

    def __len__(self) -> int:
        return len(self._names)

    def ids(self) -> list[str]:
        return self._names

    def count_instances(self, name: str) -> int:
        raise NotImplementedError

    def instance_counts(self) -> list[int]:
        if self._counts is None:
            self._counts = [self._count_or_one(name) for name in self._names]
        return self._counts

    def _count_or_one(self, name: str) -> int:
        try:
            return self.count_instances(name)
        except UserError as error:
            self._uncounted.append(str(error))
            return 1

    def uncounted(self) -> list[str]:
        return self._uncounted


def is_plain_name(name: str) -> bool:
    """Whether `name` is a file name in one folder, with no folder in it: a dataset's file naming its items or masks
    by `sub/../../x` read files from outside the dataset's root."""
    return bool(name) and name == Path(name).name and name not in (".", "..") and "\\" not in name


def _refuse_paths_as_names(list_file: Path, lines: list[str]) -> None:
    """A name is a file name in the dataset's folders: one with a folder in it (`sub/../../../x`) read an image from
    outside the dataset's root, and an evaluation's overlays, named after the item, were written outside --out."""
    for number, line in enumerate(lines, start=1):
        name = line.strip()
        if name and not is_plain_name(name):
            raise UserError(
                f"{list_file}, line {number}: {name!r} is a path, not an image name (names are file names without "
                "their suffix, without / or ..)"
            )


def _refuse_names_listed_twice(list_file: Path, lines: list[str]) -> None:
    """A name listed twice would be two items of one id; refused here, naming the lines, since the general check
    (two files of one name: rename one) sends the user looking for a second image that is not there."""
    first_line: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        name = line.strip()
        if name and first_line.setdefault(name, number) != number:
            raise UserError(
                f"{list_file}, lines {first_line[name]} and {number}: {name!r} is listed twice; list each image once"
            )


class PerInstanceSource:
    """Every instance of a per-image source as its own sample (see the module docstring)."""

    def __init__(self, source: DatasetBase) -> None:
        self.source = source
        self.name = source.name
        self.split = source.split + INSTANCES_SUFFIX
        self.root = source.root
        image_ids = source.ids()
        self._keys = [(index, k) for index, count in enumerate(source.instance_counts()) for k in range(1, count + 1)]
        self._ids = [instance_id(image_ids[index], k) for index, k in self._keys]

    def __len__(self) -> int:
        return len(self._keys)

    def ids(self) -> list[str]:
        return self._ids

    def image_id(self, index: int) -> str:
        return self.source.image_id(self._keys[index][0])

    def uncounted(self) -> list[str]:
        """Why some images' instances could not be counted: their items are placeholders (one each), so the item
        list changes once the file is fixed."""
        return self.source.uncounted()

    def __getitem__(self, index: int) -> Sample:
        image_index, instance = self._keys[index]
        sample = self.source.instance_sample(image_index, instance)
        sample.id = self._ids[index]
        return sample


def require_same_size(
    mask_path: Path, mask_shape: tuple[int, ...], image_path: Path, image_shape: tuple[int, ...]
) -> None:
    if tuple(mask_shape[:2]) != tuple(image_shape[:2]):
        image_size = tuple(image_shape[:2])
        raise UserError(
            f"{mask_path}: mask size {tuple(mask_shape[:2])} differs from image {image_path.name} {image_size}"
        )


def _is_fraction(value: Any, nullable: bool) -> bool:
    """Whether `value` fits a loader's keyword: each is a ratio (SBD's mask-to-box fill, LVIS's overlap), so a
    quoted number, `true`, NaN, a negative or a percentage (8 for 0.08) is refused before it silently keeps or drops
    objects."""
    if value is None:
        return nullable
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1


def loader_options(name: str, split: str) -> dict[str, Any]:
    """The keywords the loader of `name`'s `split` (an alias or per-instance name included) is made with: they
    shape the labels a store holds, so extraction records them."""
    base_split, _ = parse_split(split)
    return dataset_options(name, dataset_facts(name).resolve_split(base_split))


def build_source(name: str, root: Path | None, split: str, loader: Callable[..., DatasetBase]) -> SampleSource:
    """The registry factory every family uses: root from --root or the config, split aliases, configured options."""
    base_split, per_instance = parse_split(split)
    base_split = dataset_facts(name).resolve_split(base_split)
    options = dataset_options(name, base_split)
    parameters = inspect.signature(loader).parameters
    accepted = set(parameters) - {"root", "split"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        known = sorted(accepted) or "none"
        where = options_source(name, base_split)
        raise UserError(f"{where}: options.{name}.{base_split}: unknown keys {unknown}; {name} accepts {known}")
    for key, value in options.items():
        if not _is_fraction(value, nullable=parameters[key].default is None):
            raise UserError(
                f"{options_source(name, base_split)}: options.{name}.{base_split}.{key} must be a fraction from 0 to 1"
                f"{' or null' if parameters[key].default is None else ''}, got {value!r}"
            )
    source = loader(root=require_root(name, root), split=base_split, **options)
    return PerInstanceSource(source) if per_instance else source

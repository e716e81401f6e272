"""Dataset families by name, timm style: a loader registers itself and `create_dataset` builds it."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from isegprobe.data.sample import Sample
from isegprobe.errors import UserError
from isegprobe.home_paths import expand_home
from isegprobe.registry import Registry


class SampleSource(Protocol):
    """What a loader gives: a sized, indexable list of samples, read lazily from disk."""

    name: str
    split: str
    root: str

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Sample: ...

    def ids(self) -> Sequence[str]: ...


DatasetFactory = Callable[[Path | None, str], SampleSource]
_SPLIT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
DATASETS: Registry[DatasetFactory] = Registry("dataset", where="--dataset")


def register_dataset(name: str) -> Callable[[DatasetFactory], DatasetFactory]:
    """Decorate a `(root, split) -> SampleSource` factory to make it `create_dataset(name, ...)`."""
    return DATASETS.register(name)


def list_datasets() -> list[str]:
    return DATASETS.names()


def create_dataset(name: str, root: str | Path | None = None, split: str = "test") -> SampleSource:
    """Build the loader `name` over `root` (a folder in that dataset's usual layout)."""
    if not _SPLIT_NAME.fullmatch(split):
        raise UserError(
            f"--split {split!r}: expected a name of letters, digits, '.', '_' and '-' that starts with a letter or a "
            "digit: it names the feature store's folder"
        )
    factory = DATASETS.get(name)
    source = factory(expand_home(root) if root is not None else None, split)
    _refuse_shared_ids(source)
    return source


def _refuse_shared_ids(source: SampleSource) -> None:
    """Items are told apart by id everywhere (a store's items, results' objects, resuming): two items of one id would
    silently be one."""
    seen: set[str] = set()
    for sample_id in source.ids():
        if sample_id in seen:
            raise UserError(
                f"{source.root}: two items of {source.name} {source.split} have the id {sample_id!r}; each image "
                "needs a name of its own: rename one of them"
            )
        seen.add(sample_id)

"""Dataset families by name, timm style: a loader registers itself and `create_dataset` builds it."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Protocol

from isegprobe.data.sample import Sample
from isegprobe.errors import UserError


class SampleSource(Protocol):
    """What a loader gives: a sized, indexable list of samples, read lazily from disk."""

    name: str
    split: str
    root: str

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Sample: ...

    def ids(self) -> Sequence[str]: ...


DatasetFactory = Callable[[Path | None, str], SampleSource]
_REGISTRY: dict[str, DatasetFactory] = {}


def register_dataset(name: str) -> Callable[[DatasetFactory], DatasetFactory]:
    def decorator(factory: DatasetFactory) -> DatasetFactory:
        _REGISTRY[name.lower()] = factory
        return factory

    return decorator


def list_datasets() -> list[str]:
    return sorted(_REGISTRY)


def create_dataset(name: str, root: str | Path | None = None, split: str = "test") -> SampleSource:
    """Build the loader `name` over `root` (a folder in that dataset's usual layout)."""
    factory = _REGISTRY.get(name.lower())
    if factory is None:
        raise UserError(f"--dataset: unknown dataset {name!r}; known: {', '.join(list_datasets())}")
    return factory(Path(root).expanduser() if root is not None else None, split)


def iterate(source: SampleSource) -> Iterator[Sample]:
    for index in range(len(source)):
        yield source[index]

"""Reading a feature store for stage two.

Reads go through tensorstore: on the same Zarr v3 store it reads an entry at 0.8x the speed of a per-image .npz
file with zstd and 1.2x with lz4 (benchmarks/reader.py), where zarr-python is several times slower per item. Each
process opens its own handles; DataLoader workers must be spawned, not forked, because tensorstore does not survive a
fork once the parent has read.

Reads are strict: a chunk that is missing or does not decode is an error naming the item (`ChunkError`), never the
array's fill value, and a store whose finished items lack chunk files is refused when it is opened (`chunks`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import tensorstore as ts
import torch
from torch.utils.data import Dataset

from isegprobe.cache.checksums import PIXEL_ARRAYS
from isegprobe.cache.chunks import chunk_problem, require_chunk_files
from isegprobe.cache.pixel_views import PixelSource
from isegprobe.cache.preload import memory_needed, onto_device, read_into_memory
from isegprobe.cache.store import FeatureStore
from isegprobe.errors import UserError

_READ_ARRAYS = ("features", *PIXEL_ARRAYS)


class ChunkError(UserError):
    """A chunk of a finished item that is missing or does not decode; `problem` says which and how. Built from its
    message alone too, as a DataLoader worker's exception is rebuilt in the main process."""

    def __init__(self, message: str, problem: str = "") -> None:
        super().__init__(message)
        self.problem = problem

    @classmethod
    def of(cls, store: FeatureStore, array: str, item: int, error: Exception) -> ChunkError:
        problem = f"the {array} chunk {chunk_problem(error)}"
        return cls(
            f"{store.path}: item {item} ({store.attrs['item_ids'][item]}): {problem}. `isegprobe cache verify "
            f"{store.path}` lists every damaged item; `extract-features --repair` extracts them again",
            problem,
        )


def open_tensorstore(path: str | Path, name: str) -> ts.TensorStore:
    """A strict read handle on one array (tensorstore wants an absolute path: `../cache` is an invalid one)."""
    spec = {
        "driver": "zarr3",
        "kvstore": {"driver": "file", "path": str(Path(path).resolve() / name)},
        "fill_missing_data_reads": False,
    }
    return ts.open(spec, read=True, context=ts.Context({"cache_pool": {"total_bytes_limit": 32 << 20}})).result()


def read_items(store: FeatureStore, handle: ts.TensorStore, name: str, items: range) -> np.ndarray:
    """The entries of `items` of one array in one read; a chunk that cannot be read raises `ChunkError` naming the
    first item it belongs to."""
    try:
        return handle[items.start : items.stop].read().result()
    except ValueError as error:
        for item in items:
            try:
                handle[item].read().result()
            except ValueError as item_error:
                raise ChunkError.of(store, name, item, item_error) from None
        raise ChunkError.of(store, name, items.start, error) from None


class CachedDataset(Dataset):
    """One entry per (item, view) of a finished store, as tensors ready for a training or evaluation step.

    Entry: `features` float16 [C, h, w]; `image` uint8 [3, S, S]; `labels` int64 [S, S] (0 = background,
    k = instance k); `ignore` bool [S, S]; `valid_box` int64 [4]; `item`, `view` ints.
    """

    def __init__(self, path: str | Path, views: list[str] | None = None, items: list[int] | None = None) -> None:
        self.store = FeatureStore.open(path)
        self.path = str(self.store.path.resolve())
        self.provenance: dict[str, Any] = self.store.attrs["featurizer"]
        self.preprocessing: dict[str, Any] = self.store.attrs["preprocessing"]
        self.item_ids: list[str] = self.store.attrs["item_ids"]
        all_views = list(self.store.attrs["views"])
        wanted_views = all_views if views is None else views
        unknown = [name for name in wanted_views if name not in all_views]
        if unknown:
            raise UserError(f"{self.path}: no view(s) {unknown}; the store has {all_views}")
        self.view_indices = [all_views.index(name) for name in wanted_views]
        # The pixels of a flipped or turned view are the identity view's, rearranged as they are read.
        self.pixel_sources = [self.store.pixel_sources[view] for view in self.view_indices]
        self._pixel_indices = sorted({source.stored for source in self.pixel_sources})
        # Per wanted view, where its pixel entry sits among `_pixel_indices` (the preloaded pixel arrays' view axis).
        self._pixel_positions = [self._pixel_indices.index(source.stored) for source in self.pixel_sources]
        done = self.store.done_mask()
        self.items = list(range(self.store.num_items)) if items is None else list(items)
        missing = [index for index in self.items if not done[index]]
        if missing:
            which = (
                f"{len(missing)} of {len(self.items)} items are"
                if items is None
                else f"item(s) {', '.join(map(str, missing[:5]))} of those asked for are"
            )
            raise UserError(
                f"{self.path}: {which} not extracted yet ({int(done.sum())} of {self.store.num_items} done); "
                "run the same `isegprobe extract-features` command again to finish the store"
            )
        require_chunk_files(self.store, self.items)
        self._handles: dict[str, ts.TensorStore] = {}
        self._handles_pid: int | None = None
        self._in_memory: dict[str, np.ndarray] | None = None
        self._on_device: dict[str, torch.Tensor] | None = None
        # Boxes are a few bytes per entry: read those of the shards in use once instead of one more read per entry.
        boxes = np.zeros(self.store.group["valid_box"].shape, np.int64)
        handle = open_tensorstore(self.path, "valid_box")
        wanted = set(self.items)
        for shard in self.store.shard_ranges():
            if wanted.intersection(shard):
                boxes[shard.start : shard.stop] = read_items(self.store, handle, "valid_box", shard)
        self.valid_boxes = torch.from_numpy(boxes)

    def __len__(self) -> int:
        return len(self.items) * len(self.view_indices)

    @property
    def num_views(self) -> int:
        """Views per item; entries are item-major (entry = item position * num_views + view position)."""
        return len(self.view_indices)

    def _arrays(self) -> dict[str, ts.TensorStore]:
        if self._handles_pid != os.getpid():
            self._handles = {name: open_tensorstore(self.store.path, name) for name in _READ_ARRAYS}
            self._handles_pid = os.getpid()
        return self._handles

    def preload(self, device: torch.device | str | None = None, progress: bool = False) -> None:
        """Read every entry in use into memory now (`data.preload`); later entries come from there, the same
        tensors as read from the store. With a `device`, the entries are kept on it and come as tensors there (in
        host memory still, said in a warning, when they would not fit). Refuses, naming the sizes, a store that
        would not fit in host memory, which every entry passes through. `progress`: a bar counts the items read."""
        if self._in_memory is not None or self._on_device is not None:
            return
        arrays = read_into_memory(
            self.store, self._arrays(), self.items, self._preload_indices(), read_items, progress=progress
        )
        on_device = None if device is None else onto_device(arrays, torch.device(device), self.path)
        if on_device is None:
            self._in_memory = arrays
        else:
            self._on_device = on_device

    def preload_bytes(self) -> int:
        """Host memory that `preload` would take: the entries in use, as stored."""
        return memory_needed(self._arrays(), self.items, self._preload_indices())

    def _preload_indices(self) -> dict[str, list[int]]:
        return {name: self._pixel_indices if name in PIXEL_ARRAYS else self.view_indices for name in _READ_ARRAYS}

    @property
    def preloaded(self) -> bool:
        return self._in_memory is not None or self._on_device is not None

    @property
    def device(self) -> torch.device | None:
        """Where the entries are kept as tensors (`preload` onto a device); None: they come to the host."""
        return None if self._on_device is None else self._on_device["features"].device

    def locate(self, index: int) -> tuple[int, int]:
        """Entry index -> (item, view) as stored."""
        if not 0 <= index < len(self):
            raise IndexError(index)
        item_position, view_position = divmod(index, len(self.view_indices))
        return self.items[item_position], self.view_indices[view_position]

    def __getitem__(self, index: int) -> dict[str, Any]:
        item, view = self.locate(index)
        source = self.pixel_sources[index % len(self.view_indices)]
        if self._on_device is not None:
            return self._device_entry(index, item, view, source)
        values = self._from_memory(index) if self._in_memory is not None else self._read(item, view, source.stored)
        features, ignore = values["features"], source.orient(values["ignore"])
        if self._in_memory is not None:  # entries must not share the preloaded arrays: a caller may write into them
            features, ignore = features.copy(), ignore.copy()
        return {
            "features": torch.from_numpy(features),
            "image": torch.from_numpy(np.ascontiguousarray(source.orient(values["images"]).transpose(2, 0, 1))),
            "labels": torch.from_numpy(np.ascontiguousarray(source.orient(values["labels"]), dtype=np.int64)),
            "ignore": torch.from_numpy(np.ascontiguousarray(ignore)),
            "valid_box": self.valid_boxes[item, view].clone(),
            "item": item,
            "view": view,
        }

    def _device_entry(self, index: int, item: int, view: int, source: PixelSource) -> dict[str, Any]:
        """The entry from the arrays kept on the device, as tensors there: the values of a store read, each a
        tensor of its own."""
        values = self._from_memory(index, self._on_device)
        contiguous = torch.contiguous_format
        return {
            "features": values["features"].clone(memory_format=contiguous),
            "image": source.orient_tensor(values["images"]).permute(2, 0, 1).clone(memory_format=contiguous),
            "labels": source.orient_tensor(values["labels"]).to(torch.int64, memory_format=contiguous, copy=True),
            "ignore": source.orient_tensor(values["ignore"]).clone(memory_format=contiguous),
            "valid_box": self.valid_boxes[item, view].clone(),
            "item": item,
            "view": view,
        }

    def _read(self, item: int, view: int, pixel_view: int) -> dict[str, np.ndarray]:
        arrays = self._arrays()
        futures = {
            name: arrays[name][item, pixel_view if name in PIXEL_ARRAYS else view].read() for name in _READ_ARRAYS
        }
        values = {}
        for name, future in futures.items():
            try:
                values[name] = future.result()
            except ValueError as error:
                raise ChunkError.of(self.store, name, item, error) from None
        return values

    def _from_memory(self, index: int, arrays: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The entry's arrays as preloaded (the stored pixel entry, for a flipped or turned view)."""
        item_position, view_position = divmod(index, len(self.view_indices))
        pixel_position = self._pixel_positions[view_position]
        return {
            name: values[item_position, pixel_position if name in PIXEL_ARRAYS else view_position]
            for name, values in (self._in_memory if arrays is None else arrays).items()
        }

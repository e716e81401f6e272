"""Reading a feature store for stage two.

Reads go through tensorstore: on the same Zarr v3 store it reads an entry at 0.8x the speed of a per-image .npz
file with zstd and 1.2x with lz4 (benchmarks/reader.py), where zarr-python is several times slower per item (see
DESIGN.md). Each process opens its own handles; DataLoader workers must be spawned, not forked, because tensorstore
does not survive a fork once the parent has read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import tensorstore as ts
import torch
from torch.utils.data import Dataset

from isegprobe.cache.store import FeatureStore
from isegprobe.errors import UserError

_READ_ARRAYS = ("features", "images", "labels", "ignore")


def open_tensorstore(path: Path, name: str) -> ts.TensorStore:
    spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path / name)}}
    return ts.open(spec, read=True, context=ts.Context({"cache_pool": {"total_bytes_limit": 32 << 20}})).result()


class CachedDataset(Dataset):
    """One entry per (item, view) of a finished store, as tensors ready for a training or evaluation step.

    Entry: `features` float16 [C, h, w]; `image` uint8 [3, S, S]; `labels` int64 [S, S] (0 = background,
    k = instance k); `ignore` bool [S, S]; `valid_box` int64 [4]; `item`, `view` ints.
    """

    def __init__(self, path: str | Path, views: list[str] | None = None, items: list[int] | None = None) -> None:
        self.store = FeatureStore.open(path)
        self.path = str(self.store.path)
        self.provenance: dict[str, Any] = self.store.attrs["featurizer"]
        self.preprocessing: dict[str, Any] = self.store.attrs["preprocessing"]
        self.item_ids: list[str] = self.store.attrs["item_ids"]
        all_views = list(self.store.attrs["views"])
        wanted_views = all_views if views is None else views
        unknown = [name for name in wanted_views if name not in all_views]
        if unknown:
            raise UserError(f"{self.path}: no view(s) {unknown}; the store has {all_views}")
        self.view_indices = [all_views.index(name) for name in wanted_views]
        done = self.store.done_mask()
        self.items = list(range(self.store.num_items)) if items is None else list(items)
        missing = [index for index in self.items if not done[index]]
        if missing:
            raise UserError(
                f"{self.path}: {len(missing)} of {len(self.items)} items are not extracted yet; "
                "run the same `isegprobe extract-features` command again to finish the store"
            )
        # Boxes are a few bytes per entry: read them all once instead of one more read per entry.
        self.valid_boxes = torch.from_numpy(np.asarray(self.store.group["valid_box"][:]).astype(np.int64))
        self._handles: dict[str, ts.TensorStore] = {}
        self._handles_pid: int | None = None

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

    def locate(self, index: int) -> tuple[int, int]:
        """Entry index -> (item, view) as stored."""
        if not 0 <= index < len(self):
            raise IndexError(index)
        item_position, view_position = divmod(index, len(self.view_indices))
        return self.items[item_position], self.view_indices[view_position]

    def __getitem__(self, index: int) -> dict[str, Any]:
        item, view = self.locate(index)
        arrays = self._arrays()
        futures = {name: arrays[name][item, view].read() for name in _READ_ARRAYS}
        values = {name: future.result() for name, future in futures.items()}
        return {
            "features": torch.from_numpy(values["features"]),
            "image": torch.from_numpy(np.ascontiguousarray(values["images"].transpose(2, 0, 1))),
            "labels": torch.from_numpy(values["labels"].astype(np.int64)),
            "ignore": torch.from_numpy(values["ignore"]),
            "valid_box": self.valid_boxes[item, view].clone(),
            "item": item,
            "view": view,
        }

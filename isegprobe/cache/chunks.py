"""Chunks a store's finished items need: which chunk files are missing, and what a chunk that cannot be read means.

An interrupted copy (cp, rsync) leaves a store whose `done` record says finished while some shard files never
arrived, and Zarr reads a missing chunk as its fill value: training and evaluation would run on zeros without a
word. Whether the files exist costs one stat per shard and array, so every reader checks when it opens a store; a
chunk missing inside a shard file, or bytes that no longer decode, are caught when they are read (`reader`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable

import numpy as np

from isegprobe.cache.store import FeatureStore
from isegprobe.errors import UserError

MAX_LISTED = 5


def missing_chunk_files(store: FeatureStore, items: Iterable[int] | None = None) -> dict[int, list[str]]:
    """Finished item (of `items`, default all) -> the arrays whose chunk file holding it does not exist."""
    done = store.done_mask()
    wanted = sorted(set(np.flatnonzero(done).tolist() if items is None else (i for i in items if done[i])))
    missing: dict[int, list[str]] = {}
    for name in sorted(store.group.array_keys()):
        if name == "done":  # a missing chunk of the record itself reads as "not done", which is true
            continue
        array = store.group[name]
        chunk_shape = array.metadata.chunk_grid.chunk_shape
        others = [range(math.ceil(size / chunk)) for size, chunk in zip(array.shape[1:], chunk_shape[1:], strict=True)]
        for chunk, members in itertools.groupby(wanted, key=lambda item: item // chunk_shape[0]):
            keys = (array.metadata.encode_chunk_key((chunk, *rest)) for rest in itertools.product(*others))
            if not all((store.path / name / key).is_file() for key in keys):
                for item in members:
                    missing.setdefault(item, []).append(name)
    return missing


def require_chunk_files(store: FeatureStore, items: Iterable[int] | None = None) -> None:
    """Refuse a store whose finished items (of `items`) lack chunk files, naming them."""
    missing = missing_chunk_files(store, items)
    if not missing:
        return
    item_ids = store.attrs["item_ids"]
    listed = [f"item {item} ({item_ids[item]}): {', '.join(names)}" for item, names in list(missing.items())]
    more = f"; and {len(listed) - MAX_LISTED} more" if len(listed) > MAX_LISTED else ""
    raise UserError(
        f"{store.path}: {len(missing)} finished {'item has' if len(missing) == 1 else 'items have'} chunk files "
        "missing (an interrupted copy?): "
        f"{'; '.join(listed[:MAX_LISTED])}{more}. The same `isegprobe extract-features` command extracts them again"
    )


def chunk_problem(error: Exception) -> str:
    """What a failed strict read (tensorstore) means for the chunk, in words."""
    text = str(error)
    if text.startswith("NOT_FOUND"):
        return "is missing"
    return f"cannot be decoded ({text.splitlines()[0][:200]})"

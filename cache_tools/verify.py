"""Checks that a store's finished items hold what they claim: the bytes written at extraction (per-entry
checksums), finite features, sane boxes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from isegprobe.cache import FeatureStore
from isegprobe.cache.checksums import CHECKED_ARRAYS, CHECKSUM_ARRAY, entry_checksums


def has_checksums(path: str | Path) -> bool:
    """False for stores made before per-entry checksums were recorded: their bytes cannot be checked."""
    return CHECKSUM_ARRAY in FeatureStore.open(path).group


def verify_store(path: str | Path) -> list[str]:
    """Problems found in the items marked done (an empty list means the store is consistent)."""
    store = FeatureStore.open(path)
    group, size = store.group, store.attrs["preprocessing"]["size"]
    checked = CHECKSUM_ARRAY in group
    views = store.attrs["views"]
    problems = []
    if group["features"].shape[:2] != (store.num_items, store.num_views):
        problems.append(f"features shape {group['features'].shape} does not match {store.num_items} items x views")
    for items in store.shard_ranges():
        done = store.done_mask()[items.start : items.stop]
        if not done.any():
            continue
        window = slice(items.start, items.stop)
        features = group["features"][window][done].astype(np.float32)
        boxes = group["valid_box"][window][done]
        if checked:
            recorded = group[CHECKSUM_ARRAY][window][done]
            recomputed = entry_checksums({name: group[name][window][done] for name in CHECKED_ARRAYS})
        for offset, index in enumerate(np.flatnonzero(done) + items.start):
            item_id = store.attrs["item_ids"][index]
            if checked and (recorded[offset] != recomputed[offset]).any():
                changed = [views[view] for view in np.flatnonzero(recorded[offset] != recomputed[offset])]
                problems.append(
                    f"item {index} ({item_id}): view(s) {', '.join(changed)} no longer match their checksum "
                    "(the stored bytes changed after extraction)"
                )
            if not np.isfinite(features[offset]).all():
                problems.append(f"item {index} ({item_id}): features are not finite")
            elif not features[offset].any():
                problems.append(f"item {index} ({item_id}): features are all zero although marked done")
            y0, x0, y1, x1 = boxes[offset].T
            if ((y0 < 0) | (x0 < 0) | (y1 > size) | (x1 > size) | (y1 <= y0) | (x1 <= x0)).any():
                problems.append(f"item {index} ({item_id}): valid box outside the {size} px image")
    return problems

"""Which finished entries of a store can no longer be trusted: bytes that changed after extraction (checksums),
non-finite or all-zero features, boxes outside the image. `cache verify` reports them; `extract-features --repair`
marks their items undone and extracts them again."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from isegprobe.cache.checksums import CHECKED_ARRAYS, CHECKSUM_ARRAY, entry_checksums
from isegprobe.cache.store import FeatureStore

CHANGED_BYTES = "no longer match their checksum (the stored bytes changed after extraction)"


def broken_entries(store: FeatureStore) -> Iterator[tuple[int, str]]:
    """(item index, what is wrong) for every finished item that fails a check, shard by shard."""
    group, size = store.group, store.attrs["preprocessing"]["size"]
    checked = CHECKSUM_ARRAY in group
    views = store.attrs["views"]
    done_mask = store.done_mask()
    for items in store.shard_ranges():
        done = done_mask[items.start : items.stop]
        if not done.any():
            continue
        window = slice(items.start, items.stop)
        # Each array of the shard is read once: the checksums and the feature checks share the features.
        stored = {name: group[name][window][done] for name in (CHECKED_ARRAYS if checked else ("features",))}
        features = stored["features"].astype(np.float32)
        boxes = group["valid_box"][window][done]
        if checked:
            mismatched = group[CHECKSUM_ARRAY][window][done] != entry_checksums(stored)
        for offset, index in enumerate(np.flatnonzero(done) + items.start):
            if checked and mismatched[offset].any():
                changed = ", ".join(views[view] for view in np.flatnonzero(mismatched[offset]))
                yield int(index), f"view(s) {changed} {CHANGED_BYTES}"
            if not np.isfinite(features[offset]).all():
                yield int(index), "features are not finite"
            elif not features[offset].any():
                yield int(index), "features are all zero although marked done"
            y0, x0, y1, x1 = boxes[offset].T
            if ((y0 < 0) | (x0 < 0) | (y1 > size) | (x1 > size) | (y1 <= y0) | (x1 <= x0)).any():
                yield int(index), f"valid box outside the {size} px image"


def mark_undone(store: FeatureStore, indices: list[int]) -> None:
    """Clear the completion record of these items, so that the next extraction computes them (and their shards)
    again; the attrs' item count follows. One write of the record, not one per item."""
    done = store.done_mask().astype(np.uint8)
    done[indices] = 0
    store.group["done"][:] = done
    store.record_progress()

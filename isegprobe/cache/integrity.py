"""Which finished entries of a store can no longer be trusted: chunks that are missing or do not decode, bytes that
changed after extraction (checksums), non-finite or all-zero features, boxes outside the image. `cache verify`
reports them; `extract-features --repair` marks their items undone and extracts them again."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from isegprobe.cache.checksums import (
    CHECKSUM_ARRAY,
    PIXEL_ARRAYS,
    entry_checksums,
    pixel_checksums,
    schema1_checksums,
)
from isegprobe.cache.reader import ChunkError, open_tensorstore, read_items
from isegprobe.cache.store import FeatureStore

CHANGED_BYTES = "no longer match their checksum (the stored bytes changed after extraction)"
# Where each view lies in its image, which evaluation and `plot predictions` read: no checksum covers them, but a
# missing or undecodable chunk of theirs makes every reader refuse the store
_GEOMETRY_ARRAYS = ("crop_box", "original_size")


def broken_entries(store: FeatureStore, on_shard: Callable[[int], None] | None = None) -> Iterator[tuple[int, str]]:
    """(item index, what is wrong) for every finished item that fails a check, shard by shard. A shard with an
    unreadable chunk is checked again item by item, so that one damaged item hides none of its neighbours.
    `on_shard(checked)` follows the reading (a progress bar): after each shard, with its number of finished items."""
    checked = CHECKSUM_ARRAY in store.group
    names = ["features", *(PIXEL_ARRAYS if checked else ()), "valid_box", *((CHECKSUM_ARRAY,) if checked else ())]
    names += [name for name in _GEOMETRY_ARRAYS if name in store.group]  # read for their chunks alone
    handles = {name: open_tensorstore(store.path, name) for name in names}
    done_mask = store.done_mask()
    for items in store.shard_ranges():
        done = np.flatnonzero(done_mask[items.start : items.stop]) + items.start
        if not len(done):
            continue
        try:
            yield from _problems(store, handles, items, done)
        except ChunkError:
            for index in done:
                try:
                    yield from _problems(store, handles, range(index, index + 1), done[done == index])
                except ChunkError as error:
                    yield int(index), error.problem
        if on_shard is not None:
            on_shard(len(done))


def _problems(store: FeatureStore, handles: dict, items: range, done: np.ndarray) -> list[tuple[int, str]]:
    """The problems of the finished items `done` of `items`, read in one go (each array once: the checksums and
    the feature checks share the features); raises ChunkError before reporting anything."""
    size, views = store.attrs["preprocessing"]["size"], store.attrs["views"]
    stored = {name: read_items(store, handle, name, items)[done - items.start] for name, handle in handles.items()}
    features, boxes = stored["features"].astype(np.float32), stored["valid_box"]
    mismatched = None if CHECKSUM_ARRAY not in stored else stored[CHECKSUM_ARRAY] != _checksums(store, stored)
    problems = []
    for offset, index in enumerate(done.tolist()):
        if mismatched is not None and mismatched[offset].any():
            changed = ", ".join(views[view] for view in np.flatnonzero(mismatched[offset]))
            problems.append((index, f"view(s) {changed} {CHANGED_BYTES}"))
        if not np.isfinite(features[offset]).all():
            problems.append((index, "features are not finite"))
        elif not features[offset].any():
            problems.append((index, "features are all zero although marked done"))
        y0, x0, y1, x1 = boxes[offset].T
        if ((y0 < 0) | (x0 < 0) | (y1 > size) | (x1 > size) | (y1 <= y0) | (x1 <= x0)).any():
            problems.append((index, f"valid box empty or reaching outside the {size} px image"))
    return problems


def _checksums(store: FeatureStore, stored: dict[str, np.ndarray]) -> np.ndarray:
    """The checksums of the entries read into `stored`, by the rule of the store's schema (`checksums`)."""
    if store.schema_version == 1:
        return schema1_checksums(stored)
    pixel_sums = pixel_checksums({name: stored[name] for name in PIXEL_ARRAYS})
    return entry_checksums(stored["features"], pixel_sums, [source.stored for source in store.pixel_sources])


def mark_undone(store: FeatureStore, indices: list[int]) -> None:
    """Clear the completion record of these items, so that the next extraction computes them (and their shards)
    again; the attrs' item count follows. One write of the record, not one per item."""
    done = store.done_mask().astype(np.uint8)
    done[indices] = 0
    store.group["done"][:] = done
    store.record_progress()

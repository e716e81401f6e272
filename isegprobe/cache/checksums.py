"""Per-entry checksums, written at extraction and checked by `isegprobe cache verify`.

Zarr's codecs detect no corruption of their own: a flipped bit in a shard decodes to other numbers without an
error. Each (item, view) therefore gets a CRC32 over the bytes of its features, image, labels and ignore mask as
stored, written in the same shard write as the data; `verify` recomputes it from what it reads back. Stores made
before checksums existed have no `checksum` array and stay readable; `verify` says that it cannot check them.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping

import numpy as np

CHECKSUM_ARRAY = "checksum"
CHECKED_ARRAYS = ("features", "images", "labels", "ignore")


def entry_checksums(arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    """uint32 [items, views]: CRC32 of each entry's `CHECKED_ARRAYS` bytes, in that order (arrays in stored dtypes)."""
    items, views = arrays["features"].shape[:2]
    sums = np.zeros((items, views), np.uint32)
    for item in range(items):
        for view in range(views):
            crc = 0
            for name in CHECKED_ARRAYS:
                crc = zlib.crc32(np.ascontiguousarray(arrays[name][item, view]).tobytes(), crc)
            sums[item, view] = crc
    return sums

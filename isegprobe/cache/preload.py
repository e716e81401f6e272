"""A store's entries read into memory once (`data.preload`), for stores small enough and devices fast enough that
decoding chunks at every step is what a training step waits for.

On a GPU they can be kept in the device's memory (`onto_device`), so that a batch is put together there and nothing
of it crosses from the host: from host memory a ViT-L/14 batch of 8 at 448 px still took 14 ms to gather, copy and
pin on an H200's host, in a step of 49 ms.

On an H200 a batch of 8 ViT-L/14 entries at 448 px took 104 ms to read and decode from the store against 33 ms from
memory, in a step of 159 ms (benchmarks/README.md, "Issue 22 on a GPU"); on a CPU the step's arithmetic hides the
reads. The arrays are kept as stored (float16 features, uint8 pixels, uint16 labels), at a third of what the
entries they become take, and a store that would not fit is refused before anything is read.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import tensorstore as ts
import torch
from tqdm.auto import tqdm

from isegprobe.cache.store import FeatureStore
from isegprobe.errors import UserError

log = logging.getLogger(__name__)

# Preloading may take at most this share of the memory available when it starts: the rest is left to the process
# (the probe, its optimizer, the loader) and to the machine.
MEMORY_SHARE = 0.6


def read_into_memory(
    store: FeatureStore,
    handles: Mapping[str, ts.TensorStore],
    items: Sequence[int],
    view_indices: Mapping[str, Sequence[int]],
    read_items: Callable[[FeatureStore, ts.TensorStore, str, range], np.ndarray],
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Every array of `handles` for `items` (in that order) and, along its view axis, the entries
    `view_indices[name]`: [items, len(view_indices[name]), ...] each. `read_items(store, handle, name, range)` reads
    a contiguous run of items, strictly. With `progress`, a bar counts the items read: a large store takes minutes
    before training's first step."""
    shapes = _shapes(handles, items, view_indices)
    needed = _nbytes(handles, shapes)
    available = available_memory()
    if not fits_in_memory(needed, available):
        raise UserError(
            f"{store.path}: data.preload needs {readable_size(needed)} of memory for {len(items)} items x "
            f"{len(view_indices['features'])} views, and {readable_size(available)} are available (at most "
            f"{MEMORY_SHARE:.0%} of it is used); train without data.preload, which reads the store as it goes"
        )
    arrays = {name: np.empty(shape, handles[name].dtype.numpy_dtype) for name, shape in shapes.items()}
    description = f"data.preload {store.path.name} ({readable_size(needed)})"
    with tqdm(total=len(items), unit="item", desc=description, disable=not progress, file=sys.stderr) as bar:
        for positions, run in _contiguous_runs(items, store.items_per_shard):
            for name, handle in handles.items():
                arrays[name][positions] = read_items(store, handle, name, run)[:, list(view_indices[name])]
            bar.update(len(run))
    return arrays


def memory_needed(
    handles: Mapping[str, ts.TensorStore], items: Sequence[int], view_indices: Mapping[str, Sequence[int]]
) -> int:
    """Bytes that `read_into_memory` would take for these items and views, as stored."""
    return _nbytes(handles, _shapes(handles, items, view_indices))


def fits_in_memory(needed: int, available: int | None = None) -> bool:
    """Whether `needed` bytes are at most MEMORY_SHARE of the memory available (now, unless given)."""
    return needed <= MEMORY_SHARE * (available_memory() if available is None else available)


def _shapes(
    handles: Mapping[str, ts.TensorStore], items: Sequence[int], view_indices: Mapping[str, Sequence[int]]
) -> dict[str, tuple[int, ...]]:
    return {name: (len(items), len(view_indices[name]), *handle.shape[2:]) for name, handle in handles.items()}


def _nbytes(handles: Mapping[str, ts.TensorStore], shapes: Mapping[str, tuple[int, ...]]) -> int:
    return sum(int(np.prod(shape)) * handles[name].dtype.numpy_dtype.itemsize for name, shape in shapes.items())


def onto_device(arrays: Mapping[str, np.ndarray], device: torch.device, where: str) -> dict[str, torch.Tensor] | None:
    """The preloaded arrays as tensors on `device` (labels as int32: its GPU kernels do not all take uint16), or
    None, said in a warning, when they would take more than MEMORY_SHARE of its free memory: they then stay in
    host memory, from where training reads them as well, only slower."""
    widened = {name for name, values in arrays.items() if values.dtype == np.uint16}
    needed = sum(values.size * 4 if name in widened else values.nbytes for name, values in arrays.items())
    free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else available_memory()
    if not fits_in_memory(needed, free):
        log.warning(
            "%s: data.preload keeps the store in host memory: on %s it would take %s of the %s free",
            where,
            device,
            readable_size(needed),
            readable_size(free),
        )
        return None
    return {
        name: torch.from_numpy(values.astype(np.int32) if name in widened else values).to(device)
        for name, values in arrays.items()
    }


def available_memory() -> int:
    """Bytes this process can take without swapping: Linux's MemAvailable, else the free physical pages."""
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def readable_size(nbytes: int) -> str:
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"


def _contiguous_runs(items: Sequence[int], longest: int) -> list[tuple[slice, range]]:
    """(positions in `items`, stored items) for each run of consecutive item numbers, at most `longest` long: a
    read holds every view of its run at once, so a run is at most a shard, not the whole store twice over."""
    runs, start = [], 0
    for position in range(1, len(items) + 1):
        if position == len(items) or items[position] != items[position - 1] + 1 or position - start == longest:
            runs.append((slice(start, position), range(items[start], items[position - 1] + 1)))
            start = position
    return runs

"""What a loader worker makes of a shard for the store during extraction: the pixels of the views that keep their
own, every view's boxes and the items' sizes, in shared memory (`ShardViews`, which `extract_loop.py` reads)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from isegprobe.cache.checksums import PIXEL_ARRAYS, pixel_checksums
from isegprobe.cache.pixel_views import PixelSource
from isegprobe.data import SampleSource
from isegprobe.data.preprocess import View, ViewSpec, make_view, orient_box
from isegprobe.errors import UserError

# What a loader worker makes for the store: the stored views' pixels, every view's boxes, the item's size.
WORKER_ARRAYS = (*PIXEL_ARRAYS, "valid_box", "crop_box", "original_size")


class ShardViews(Dataset):
    """Shard position -> the arrays the store keeps of every view of every item of that shard; runs in DataLoader
    workers.

    The arrays travel as tensors, which PyTorch hands to the main process in shared memory. Pickled through the
    workers' pipes as numpy arrays (3 MB an item at 448 px), they kept the main process of an extraction on a
    16-core GPU machine waiting for 60 % of the run, whatever the number of workers. A whole shard travels at once:
    each shared tensor costs the main process a round trip to the worker's resource sharer (0.2 to 0.3 ms of its
    CPU time here), and handing items over one by one had cost it more than the rest of its loop together on a CPU.

    What travels is what the store keeps (`WORKER_ARRAYS`): the pixels of the views that keep their own
    (`pixel_sources`), every view's boxes and the items' sizes, with the CRC of each stored pixel entry. The main
    process writes them through tensorstore with the features, whose CRCs continue those. Each item's views go
    straight into these arrays, made in shared memory (`_handed_over`). The featurizer's images are made from the
    stored pixels on the device (`extract_loop.py`): a view that is a flip or turn of the identity view travels
    as no bytes at all, where its image had doubled what each item handed over, pinned and copied to a GPU.
    Written in the workers through zarr-python (tensorstore aborts in a forked child once its parent has used it),
    the arrays cost 4.3 ms of a worker's CPU per item (two 448 px views), against 2.2 ms in tensorstore's threads,
    which run outside Python; compressed in the main process's zarr threads they had held a GPU extraction to a tenth
    of its featurizer's speed.

    A file that cannot be read comes back as {"index", "error"} rather than as an exception: DataLoader would wrap
    the exception in a worker traceback, and the main process raises it as the one-line message it is. Nothing of
    that shard is written then. A shard that finds no room in shared memory comes back as {"no_room"}.
    """

    def __init__(
        self,
        source: SampleSource,
        shards: list[range],
        specs: list[ViewSpec],
        sources: list[PixelSource],
        size: int,
        resize: str,
        layouts: dict[str, tuple[tuple[int, ...], np.dtype]],
    ):
        self.source, self.shards, self.specs, self.sources = source, shards, specs, sources
        self.size, self.resize, self.layouts = size, resize, layouts

    def __len__(self) -> int:
        return len(self.shards)

    def __getitem__(self, position: int) -> dict[str, Any]:
        items = self.shards[position]
        try:
            tensors = {name: _handed_over((len(items), *shape), dtype) for name, (shape, dtype) in self.layouts.items()}
        except RuntimeError as error:  # PyTorch's words for a shared-memory file it cannot make
            return {"no_room": f"no room for a shard in shared memory (/dev/shm): {error}"}
        arrays = {name: tensor.numpy() for name, tensor in tensors.items()}
        for slot, index in enumerate(items):
            try:
                self._fill(slot, index, arrays)
            except UserError as error:
                return {"index": index, "error": str(error)}
        pixel_sums = pixel_checksums(arrays)
        return {"pixels": tensors.pop("images"), "stored": KeptOnHost(tensors), "pixel_sums": pixel_sums}

    def _fill(self, slot: int, index: int, arrays: dict[str, np.ndarray]) -> None:
        """Make item `index`'s views and put them at `slot` of the shard's arrays: the pixels of the views that keep
        their own, and every view's boxes."""
        sample = self.source[index]
        stored: dict[int, View] = {}
        for v, (spec, source) in enumerate(zip(self.specs, self.sources, strict=True)):
            if source.rearranged_by is None:
                view = make_view(sample, spec, self.size, self.resize, seed=index * 1009 + v)
                stored[source.stored] = view
                for name, pixels in zip(PIXEL_ARRAYS, (view.image, view.labels, view.ignore), strict=True):
                    arrays[name][slot, source.stored] = pixels
                valid_box = view.valid_box
            else:
                view = stored[source.stored]
                valid_box = orient_box(view.valid_box, spec, self.size)
            arrays["valid_box"][slot, v] = valid_box
            arrays["crop_box"][slot, v] = view.crop_box
        arrays["original_size"][slot] = sample.image.shape[:2]


@dataclass
class KeptOnHost:
    """Tensors of a batch that DataLoader's pinning leaves where they are: it pins those in dicts, lists and tuples
    for the copy to a GPU, and the arrays a shard keeps go to the disk."""

    tensors: dict[str, torch.Tensor]

    def numpy(self) -> dict[str, np.ndarray]:
        return {name: tensor.numpy() for name, tensor in self.tensors.items()}


def _handed_over(shape: tuple[int, ...], dtype: np.dtype) -> torch.Tensor:
    """An uninitialized tensor of `shape` and `dtype` for what a shard hands over, made in shared memory when this
    is a loader worker, as DataLoader's own collate does: a tensor that is not is copied there as it is sent.
    Stacking the views per item and per shard and that copy cost a worker 1.8 to 1.9 ms of CPU per item (two 448 px
    views), filling the shared tensor 0.8 ms, page faults included."""
    torch_dtype = torch.from_numpy(np.empty(0, dtype)).dtype
    if get_worker_info() is None:
        return torch.empty(shape, dtype=torch_dtype)
    storage = torch.UntypedStorage._new_shared(math.prod(shape) * dtype.itemsize)
    return torch.empty(0, dtype=torch_dtype).set_(storage).view(shape)

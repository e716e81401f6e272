"""Stage one: run the frozen featurizer once over a dataset and fill a feature store.

Resumable by construction: work is done shard by shard, a shard is written atomically after its features exist,
and the `done` record says which items are finished. Under torchrun each rank takes every WORLD_SIZE-th shard.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info
from tqdm import tqdm

from isegprobe import featurizers
from isegprobe.cache.attrs import build_attrs
from isegprobe.cache.checksums import PIXEL_ARRAYS, pixel_checksums
from isegprobe.cache.chunks import missing_chunk_files
from isegprobe.cache.image_match import image_mismatch, working_image
from isegprobe.cache.integrity import broken_entries, mark_undone
from isegprobe.cache.pixel_views import PixelSource
from isegprobe.cache.reader import open_tensorstore
from isegprobe.cache.schema import (
    DEFAULT_CODEC,
    DEFAULT_ITEMS_PER_SHARD,
    SCHEMA_VERSION,
    mismatches,
    store_name,
)
from isegprobe.cache.store import (
    FeatureStore,
    finish_an_interrupted_swap,
    put_in_place,
    refuse_output_inside_a_store,
    replacement_path,
)
from isegprobe.data import SampleSource, create_dataset, dataset_root, root_origin_told
from isegprobe.data.base import PerInstanceSource, loader_options
from isegprobe.data.preprocess import (
    View,
    ViewSpec,
    make_view,
    normalize_images,
    orient_box,
    parse_views,
)
from isegprobe.devices import featurizer_autocast, from_host
from isegprobe.distributed import barrier, init_from_env, refuse_ranks_that_differ
from isegprobe.errors import UserError
from isegprobe.featurizers import Featurizer
from isegprobe.featurizers.normalization import DEFAULT_NORMALIZATION
from isegprobe.loader_workers import default_loader_workers, require_sensible_workers, worker_processes
from isegprobe.locks import exclusive_lock, refuse_if_held
from isegprobe.weights_files import require_featurizer_weights


@dataclass
class ExtractionRequest:
    featurizer: str
    weights: str
    dataset: str
    root: str | None
    split: str
    size: int
    views: str = "identity,hflip"
    resize: str = "stretch"
    batch_size: int = 8
    device: str = "cpu"
    out: str = "cache"
    overwrite: bool = False
    repair: bool = False
    items_per_shard: int | None = None  # None: DEFAULT_ITEMS_PER_SHARD for a new store, a resumed store's own
    workers: int = field(default_factory=default_loader_workers)
    codec: str | None = None  # None: DEFAULT_CODEC for a new store, a resumed store's own
    normalization: str = DEFAULT_NORMALIZATION


@dataclass
class LoopTimes:
    """Where the extraction loop's wall time went, which says what to change when extraction is slow: waiting for
    images means decoding and resizing are behind (more --workers, where cores are free); `featurizer` is the
    forward itself (on a GPU, queueing it and waiting for the device once the loop is as many shards ahead as may
    be written at once); waiting for writes means compression and the disk are behind.

    `thread_cpu` is the CPU time the loop's own thread spent in each stage. Its featurizer part is, on a CPU, the
    device's work itself (normalizing, the views' flips and turns, the cast to float16), which a GPU takes off the
    host; `benchmarks/extract_pipeline.py` tells it apart from the host's work by it."""

    waiting_for_images: float = 0.0
    featurizer: float = 0.0
    waiting_for_writes: float = 0.0
    total: float = 0.0
    thread_cpu: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def measure(self, stage: str) -> Iterator[None]:
        """Add the wall time of the `with` body to `stage` (one of the fields above), its thread's CPU time to
        `thread_cpu[stage]`."""
        started, cpu = time.perf_counter(), time.thread_time()
        yield
        setattr(self, stage, getattr(self, stage) + time.perf_counter() - started)
        self.thread_cpu[stage] = self.thread_cpu.get(stage, 0.0) + time.thread_time() - cpu

    def summary(self) -> str:
        """'41 % waiting for images, 35 % featurizer, 20 % waiting for writes' (the rest is the loop's own work)."""
        parts = {
            "waiting for images": self.waiting_for_images,
            "featurizer": self.featurizer,
            "waiting for writes": self.waiting_for_writes,
        }
        return ", ".join(f"{100 * seconds / self.total:.0f} % {name}" for name, seconds in parts.items())


@dataclass
class ExtractionResult:
    path: Path
    items_total: int
    items_extracted: int  # under torchrun, rank 0's figure counts every rank's items, the others' their own
    seconds: float
    nbytes: int
    repaired: list[str] = field(default_factory=list)  # "item id: what was wrong" (--repair), or a swap finished
    loop: LoopTimes | None = None  # None when nothing was extracted


class _ShardViews(Dataset):
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
    stored pixels on the device (`_featurizer_images`): a view that is a flip or turn of the identity view travels
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
        return {"pixels": tensors.pop("images"), "stored": _KeptOnHost(tensors), "pixel_sums": pixel_sums}

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
class _KeptOnHost:
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


# What a loader worker makes for the store: the stored views' pixels, every view's boxes, the item's size.
WORKER_ARRAYS = (*PIXEL_ARRAYS, "valid_box", "crop_box", "original_size")
# Shard writes that may run while the next shard is read and computed. Each shard is its own set of files and its
# items are marked done after its own data, so writes in flight together cannot mix, and a kill loses only them.
SHARDS_IN_FLIGHT = 4


def _single(batch: list[dict[str, Any]]) -> dict[str, Any]:
    return batch[0]


def _open_or_create(
    path: Path, wanted: dict[str, Any], featurizer: Featurizer, overwrite: bool, rank: int
) -> FeatureStore:
    """The store this run writes: the one at `path`, or a new one. Under --overwrite an existing store stays in place,
    whole and readable, while its replacement is extracted beside it (`replacement_path`), which the same command
    resumes as any store; `put_in_place` swaps them once every item is done, so a run that fails loses nothing.
    Every rank decides from what is on disk before the barrier; only rank 0 creates, the others open after it."""
    existed = path.exists() or path.is_symlink()
    target = replacement_path(path) if existed and overwrite else path
    resumable = target != path and _matching_store(target, wanted) is not None
    barrier()
    if existed and not overwrite:
        if not (path / "zarr.json").is_file():
            raise UserError(f"--out: {path} exists and is not a feature store; remove it or pass --overwrite")
        store = FeatureStore.open(path, mode="r+")
        problems = mismatches(store.attrs, wanted) if "featurizer" in store.attrs else ["the store has no attrs"]
        if problems:
            raise UserError(
                f"{path}: refusing to add to a store made differently:\n  "
                + "\n  ".join(problems)
                + "\nPass --overwrite to replace it, or choose another --out."
                + _unfinished_replacement_note(path, wanted)
            )
        if rank == 0 and replacement_path(path).exists():
            tqdm.write(
                f"note: {replacement_path(path)} holds an --overwrite of this store that did not finish: the same "
                "command with --overwrite finishes it and puts it in place; delete it to free its space",
                file=sys.stderr,
            )
        return store
    if resumable:
        return FeatureStore.open(target, mode="r+")
    if rank == 0:
        store = FeatureStore.create(
            target, wanted, dim=featurizer.dim, grid=_feature_grid(featurizer, wanted["preprocessing"]["size"])
        )
    barrier()
    return store if rank == 0 else FeatureStore.open(target, mode="r+")


def _unfinished_replacement_note(path: Path, wanted: dict[str, Any]) -> str:
    """An --overwrite stopped half way is run again without --overwrite: the refusal says that its replacement,
    made as this run asks, is there and that --overwrite goes on from its finished items, not from the start."""
    replacement = replacement_path(path)
    if _matching_store(replacement, wanted) is None:
        return ""
    return (
        f"\n{replacement.name} beside it holds an --overwrite made as this run asks that did not finish: "
        "--overwrite goes on from its finished items."
    )


def _matching_store(path: Path, wanted: dict[str, Any]) -> FeatureStore | None:
    """The store at `path` if there is one, readable, made as `wanted` asks."""
    if not (path / "zarr.json").is_file():
        return None
    try:
        store = FeatureStore.open(path)
    except UserError:
        return None
    return store if "featurizer" in store.attrs and not mismatches(store.attrs, wanted) else None


def _feature_grid(featurizer: Featurizer, size: int) -> tuple[int, int]:
    problem = featurizer.size_problem(size, size)
    if problem is not None:
        fixed = f"; pass --size {featurizer.fixed_size}" if featurizer.fixed_size else ""
        raise UserError(f"--size {size}: {featurizer.name} {problem}{fixed}")
    if size % featurizer.patch_size:
        raise UserError(
            f"--size {size}: must be a multiple of the featurizer's {featurizer.stride_name} {featurizer.patch_size}"
        )
    return size // featurizer.patch_size, size // featurizer.patch_size


class QueuedFeatures:
    """A shard's float16 features [M, C, h, w] as the device makes them, in host memory once `wait` returns.

    On a GPU the forward and the copy back are only queued: the loop goes on to the next shard's images while the
    device computes, and the shard's writer waits for this. A forward that the loop waited for left the GPU idle
    while the loop took the next shard's images from the workers, and the host idle while the GPU computed; at
    ViT-L/14 the two took turns (202 images/s against 285 for the forward alone and 342 for the rest)."""

    def __init__(self, values: torch.Tensor, copied: torch.cuda.Event | None) -> None:
        self.values, self._copied = values, copied

    def wait(self) -> np.ndarray:
        """The features, once the device has copied them back (at once on a CPU)."""
        if self._copied is not None:
            self._copied.synchronize()
        return self.values.numpy()


class _Scratch:
    """Tensors on the extraction's device that each shard refills: every view's image, the featurizer's normalized
    input. On a CPU a fresh tensor per shard or batch costs its page faults every time (normalizing 32 images at
    448 px took 88 ms of CPU into a new tensor, 57 into one used before); on a GPU the work queued on one stream
    reads and refills them in order."""

    def __init__(self) -> None:
        self._kept: dict[str, torch.Tensor] = {}

    def take(self, name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """A contiguous tensor of `shape`: the first `shape[0]` rows of the one kept as `name` (of one dtype and
        device in a run), made anew when that one is too small."""
        kept = self._kept.get(name)
        if kept is None or kept.shape[1:] != shape[1:] or len(kept) < shape[0]:
            kept = self._kept[name] = torch.empty(shape, dtype=dtype, device=device)
        return kept[: shape[0]]


def _featurizer_images(
    pixels: torch.Tensor, sources: list[PixelSource], device: torch.device, scratch: _Scratch
) -> torch.Tensor:
    """A shard's stored pixels, uint8 [items, stored views, S, S, 3] on the host -> every view's image on `device`,
    uint8 [items * views, S, S, 3] (item-major, contiguous: the featurizer's input layout decides which kernels run,
    and so the last bits of the features). The pixels cross to the device once; the flips and turns happen there."""
    stored = from_host(pixels, device)
    images = scratch.take("images", (len(pixels), len(sources), *pixels.shape[2:]), pixels.dtype, device)
    for v, source in enumerate(sources):
        images[:, v] = source.orient_tensor(stored[:, source.stored].movedim(0, 2)).movedim(2, 0)
    return images.flatten(0, 1)


@torch.inference_mode()
def _queue_forward(
    featurizer: Featurizer, images: torch.Tensor, batch_size: int, device: torch.device, scratch: _Scratch
) -> QueuedFeatures:
    """uint8 [M, S, S, 3] on `device` -> float16 [M, C, h, w] on the host, in batches of `batch_size` images, each
    batch's features copied straight into the host tensor that is returned (no concatenation).

    On an accelerator the features are cast to float16 there, before the copy. A blocking copy to the host that
    also converts has PyTorch copy into a fresh host tensor of the source dtype and convert it with the main
    process's CPU threads, moving twice the bytes (autocast leaves the final norm's output in float32). Both
    roundings are IEEE round-to-nearest-even, so the stored values are the same. On a GPU the features go back
    into pinned memory (the pixels came in pinned memory too: the loader pins them), so that neither copy waits for
    the device: the host only queues the work."""
    on_gpu = device.type == "cuda"
    outputs: torch.Tensor | None = None
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        normalized = scratch.take("normalized", chunk.shape, torch.float32, device).permute(0, 3, 1, 2)
        with featurizer_autocast(device):
            features = featurizer(
                normalize_images(chunk.permute(0, 3, 1, 2), featurizer.mean, featurizer.std, normalized)
            )
        if device.type != "cpu":
            features = features.to(torch.float16)
        if outputs is None:
            shape = (len(images), *features.shape[1:])
            outputs = torch.empty(shape, dtype=torch.float16, pin_memory=on_gpu)
        outputs[start : start + len(features)].copy_(features, non_blocking=on_gpu)
    copied = torch.cuda.Event() if on_gpu else None
    if copied is not None:
        copied.record(torch.cuda.current_stream(device))  # the stream of `device`, which need not be the current one
    return QueuedFeatures(outputs, copied)


def _finish_shard(
    store: FeatureStore, items: range, shard: dict[str, Any], queued: QueuedFeatures, num_views: int
) -> None:
    """Write a shard once its features are on the host (a writer thread): its arrays, features and checksums, then
    its `done` record."""
    features = queued.wait()
    arrays = {"images": shard["pixels"].numpy(), **shard["stored"].numpy()}
    features = features.reshape(len(items), num_views, *features.shape[1:])
    store.finish_items(items, arrays, features, shard["pixel_sums"])


def _pending_shards(store: FeatureStore, rank: int, world: int) -> list[range]:
    done = store.done_mask()
    return [
        items
        for shard, items in enumerate(store.shard_ranges())
        if shard % world == rank and not done[items.start : items.stop].all()
    ]


def _refuse_uncounted_instances(source: SampleSource, split: str) -> None:
    """A per-instance split lists one item per instance, counted from each annotation when the store is made; an
    annotation that cannot be read counts one, so the store's items would change once the file is fixed, and the
    extraction, stopped at that file, could not be resumed as its message says: refused before anything is written."""
    if isinstance(source, PerInstanceSource) and (problems := source.uncounted()):
        more = (
            f" (and {len(problems) - 1} more; isegprobe datasets check --on-error skip lists them)"
            if len(problems) > 1
            else ""
        )
        raise UserError(
            f"{problems[0]}{more}\n--split {split} gives one item per instance, and this file's instances cannot be "
            "counted: fix it and run the command again (nothing was written)"
        )


def extract(request: ExtractionRequest, featurizer: Featurizer | None = None) -> ExtractionResult:
    """Fill (or finish) the store for `request`; returns where it is and how much work was done. `featurizer` is
    the one `request` names, already built (a caller extracting several datasets builds it once)."""
    started = time.perf_counter()
    specs = parse_views(request.views)
    if request.batch_size < 1:
        raise UserError(f"--batch-size: expected a positive number, got {request.batch_size}")
    require_sensible_workers(request.workers, "--workers")
    require_featurizer_weights(request.weights, "--weights")
    refuse_output_inside_a_store(request.out)
    if request.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available here; use --device cpu")
    rank, world, device = init_from_env(request.device)
    root = dataset_root(request.dataset, request.root)
    with root_origin_told(request.dataset, request.root):
        source = create_dataset(request.dataset, root, request.split)
    if len(source) == 0:
        raise UserError(f"--dataset {request.dataset} --split {request.split}: no items under {source.root}")
    _refuse_uncounted_instances(source, request.split)
    path = Path(request.out) / store_name(
        request.featurizer, request.dataset.lower(), request.split, request.size, request.normalization
    )
    if rank == 0:
        refuse_if_held(path)
    if featurizer is None:
        featurizer = featurizers.create_featurizer(
            request.featurizer, weights=request.weights, normalization=request.normalization
        )
    if featurizer.provenance["normalization"] != request.normalization:
        raise ValueError(
            f"the featurizer given normalizes by {featurizer.provenance['normalization']!r}, the request by "
            f"{request.normalization!r}: the store's name and attrs would disagree"
        )
    featurizer = featurizer.to(device)
    _feature_grid(featurizer, request.size)  # a size the featurizer cannot take is refused before any folder is made
    dataset_attrs = {
        "name": request.dataset.lower(),
        "split": request.split,
        "root": str(root.resolve()) if root else None,
        "num_items": len(source),
        "options": loader_options(request.dataset, request.split),
    }
    wanted = build_attrs(
        featurizer.provenance,
        dataset_attrs,
        list(source.ids()),
        [s.name for s in specs],
        request.size,
        request.resize,
        min(request.items_per_shard or DEFAULT_ITEMS_PER_SHARD, max(1, len(source))),  # no more room than items
        request.codec or DEFAULT_CODEC,
    )
    refuse_ranks_that_differ(_rank_settings(path, wanted, request))
    with exclusive_lock(path) if rank == 0 else nullcontext():
        swap = finish_an_interrupted_swap(path) if rank == 0 else None
        barrier()
        store = _open_or_create(path, wanted, featurizer, request.overwrite, rank)
        if rank == 0:
            _note_layout_kept(store, request, wanted["layout"])
        _refuse_to_add_to_an_old_layout(store, request.repair)
        repaired = _mark_broken_undone(store, request.repair) if rank == 0 else []
        _refuse_another_datasets_images(store, source, request.out)
        if swap:
            repaired.insert(0, f"{path.name}: {swap}")
        # Rank 0 reports every rank's items: the shards left to do, whichever rank takes each.
        every_ranks = sum(len(items) for items in _pending_shards(store, 0, 1)) if rank == 0 else 0
        barrier()
        shards = _pending_shards(store, rank, world)
        indices = [index for items in shards for index in items]
        loop = _run(store, featurizer, source, specs, request, device, shards, indices, rank == 0) if indices else None
        barrier()
        if rank == 0:
            store.record_progress()
            if store.path != path and store.done_mask().all():
                store = put_in_place(store, path)
    seconds = time.perf_counter() - started
    extracted = every_ranks if rank == 0 else len(indices)
    return ExtractionResult(path, store.num_items, extracted, seconds, store.nbytes_on_disk(), repaired, loop)


def _rank_settings(path: Path, wanted: dict[str, Any], request: ExtractionRequest) -> dict[str, Any]:
    """What a rank writes, for `refuse_ranks_that_differ`: ranks write into one store, so one with other views
    stopped on a traceback halfway, and one with other weights wrote features of another model into it, unseen. The
    dataset's folder and the weights file's path may differ from node to node (its checksum may not), and the
    loader's settings (--batch-size, --workers, --device) are each rank's own."""
    ids = json.dumps(wanted["item_ids"]).encode()
    settings = {
        "the store": str(path.resolve()),
        "--overwrite": request.overwrite,
        "--repair": request.repair,
        "--views": wanted["views"],
        "the dataset's items": f"{len(wanted['item_ids'])} ids, sha256 {hashlib.sha256(ids).hexdigest()[:16]}",
    }
    featurizer = wanted["featurizer"]
    weights = {key: featurizer.get(key) for key in ("weights", "weights_sha256", "random_seed")}
    if weights["weights_sha256"]:
        weights.pop("weights")
    settings["the featurizer's weights (--weights)"] = weights
    told = {("dataset", "root"), *(("featurizer", key) for key in ("weights", "weights_sha256", "random_seed"))}
    for group in ("featurizer", "preprocessing", "dataset", "layout"):
        for key, value in wanted[group].items():
            if (group, key) not in told:
                settings[f"the {group}'s {key}"] = value
    return settings


def _note_layout_kept(store: FeatureStore, request: ExtractionRequest, wanted: dict[str, Any]) -> None:
    """A resumed store keeps the shard size and codec it was made with, since its items already lie so; say so
    where the command asked for others, so that a user who asked for lz4's faster reads does not think they got
    them."""
    kept = []
    if request.items_per_shard is not None and store.items_per_shard != wanted["items_per_shard"]:
        kept.append(f"--items-per-shard {store.items_per_shard} (asked: {request.items_per_shard})")
    recorded = store.attrs["layout"]["compressor"]["cname"]  # the codec's name, as COMPRESSORS' keys are
    if request.codec is not None and recorded != wanted["compressor"]["cname"]:
        kept.append(f"--codec {recorded} (asked: {request.codec})")
    if kept:
        tqdm.write(
            f"note: {store.path} keeps the {' and '.join(kept)} it was made with; --overwrite extracts it again "
            "with the asked ones",
            file=sys.stderr,
        )


def _refuse_to_add_to_an_old_layout(store: FeatureStore, repair: bool) -> None:
    """A finished store of an earlier schema is left as it is (it reads as before); one that this run would write
    into is refused, since its items would be laid out in two ways."""
    if store.schema_version == SCHEMA_VERSION or (not repair and store.done_mask().all()):
        return
    raise UserError(
        f"{store.path}: a store of schema {store.schema_version}, written by an earlier isegprobe (every view's pixels "
        f"stored); it reads and verifies as before, but extraction writes schema {SCHEMA_VERSION} only, so it cannot "
        "finish or repair it. Pass --overwrite to extract it again in the new layout, or choose another --out."
    )


def _refuse_another_datasets_images(store: FeatureStore, source: SampleSource, out: str) -> None:
    """Items are matched to a store by id, and another dataset of the same layout has the same ids: resumed with
    another --root, extraction added that dataset's items to the store (or found nothing to do and kept the
    first's). So the first finished item's image is made again and compared with the store's pixels. An item whose
    image or chunks can no longer be read says nothing here; extraction or `cache verify` reports it."""
    done = np.flatnonzero(store.done_mask())
    if not len(done):
        return
    item = int(done[0])
    try:
        stored = open_tensorstore(store.path, "images")[item, store.identity_pixels].read().result()
        fresh = working_image(source[item].image, store.attrs["preprocessing"])
    except (UserError, ValueError):
        return
    mismatch = image_mismatch(stored, fresh)
    if mismatch is not None:
        raise UserError(
            f"--root {source.root}: item {store.attrs['item_ids'][item]!r} is not the image the store {store.path} "
            f"was extracted from, under {store.attrs['dataset'].get('root')} ({mismatch}); "
            f"pass --overwrite to extract this dataset into it anew, or choose another --out than {out}"
        )


def _mark_broken_undone(store: FeatureStore, repair: bool) -> list[str]:
    """Finished items whose chunk files are missing (an interrupted copy) are marked undone, so that this run
    extracts them again (with the rest of their shards, which are rewritten whole); with --repair, so are those
    that fail any of `cache verify`'s checks."""
    missing = missing_chunk_files(store)
    broken = [(index, f"chunk files missing ({', '.join(names)})") for index, names in missing.items()]
    if broken and repair:
        mark_undone(store, list(missing))  # so that the checks below read only what is there
    if repair:
        broken += list(broken_entries(store))
    if broken:
        mark_undone(store, sorted({index for index, _ in broken}))
    return [f"{store.attrs['item_ids'][index]}: {problem}" for index, problem in broken]


def _run(
    store: FeatureStore,
    featurizer: Featurizer,
    source: SampleSource,
    specs: list[ViewSpec],
    request: ExtractionRequest,
    device: torch.device,
    shards: list[range],
    indices: list[int],
    show_progress: bool,
) -> LoopTimes:
    loader = DataLoader(
        _ShardViews(
            source, shards, specs, store.pixel_sources, request.size, request.resize, store.entry_layouts(WORKER_ARRAYS)
        ),
        batch_size=1,
        collate_fn=_single,
        prefetch_factor=1 if request.workers else None,
        pin_memory=device.type == "cuda",
        **worker_processes(request.workers, "fork"),
    )
    progress = tqdm(
        total=len(indices) * len(specs), unit="img", desc="extract", disable=not show_progress, file=sys.stderr
    )
    times, scratch = LoopTimes(), _Scratch()
    started = time.perf_counter()
    with progress, ThreadPoolExecutor(max_workers=SHARDS_IN_FLIGHT, thread_name_prefix="shard-writer") as writer:
        pending: deque[tuple[QueuedFeatures, Future]] = deque()
        shard_views = iter(loader)
        for items in shards:
            with times.measure("waiting_for_images"):
                shard = next(shard_views)
            if "error" in shard:
                raise UserError(
                    f"{shard['error']}\nThe items extracted so far are kept: fix the file and run the same command "
                    "again to go on. (Removed instead, it leaves the dataset with other items than the store's, which "
                    "the store then refuses: --overwrite extracts them anew beside it and replaces it once done.)"
                )
            if "no_room" in shard:
                raise UserError(
                    f"{shard['no_room']}\nThe items extracted so far are kept: give shared memory room (docker run "
                    "--shm-size=4g ...) or pass --workers 0, and run the same command again to go on."
                )
            with times.measure("featurizer"):
                images = _featurizer_images(shard["pixels"], store.pixel_sources, device, scratch)
                queued = _queue_forward(featurizer, images, request.batch_size, device, scratch)
            if len(pending) == SHARDS_IN_FLIGHT:
                oldest, write = pending.popleft()
                with times.measure("featurizer"):
                    oldest.wait()
                with times.measure("waiting_for_writes"):
                    write.result()
            shard_write = writer.submit(_finish_shard, store, items, shard, queued, len(specs))
            pending.append((queued, shard_write))
            progress.update(len(images))
        for queued, write in pending:
            with times.measure("featurizer"):
                queued.wait()
            with times.measure("waiting_for_writes"):
                write.result()
    times.total = time.perf_counter() - started
    return times

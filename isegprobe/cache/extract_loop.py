"""The extraction loop: shards of views from the loader workers (`shard_views.py`), the featurizer's forward queued on
the device, and the shards' writes in threads while the next shard is read and computed. Where its time goes is
`LoopTimes`, which extract-features prints and `benchmarks/extract_pipeline.py` reads."""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from isegprobe.cache.pixel_views import PixelSource
from isegprobe.cache.shard_views import WORKER_ARRAYS, ShardViews
from isegprobe.cache.store import FeatureStore
from isegprobe.data import SampleSource
from isegprobe.data.preprocess import ViewSpec, normalize_images
from isegprobe.devices import featurizer_autocast, from_host
from isegprobe.errors import UserError
from isegprobe.featurizers import Featurizer
from isegprobe.loader_workers import worker_processes

if TYPE_CHECKING:
    from isegprobe.cache.extract import ExtractionRequest

# Shard writes that may run while the next shard is read and computed. Each shard is its own set of files and its
# items are marked done after its own data, so writes in flight together cannot mix, and a kill loses only them.
SHARDS_IN_FLIGHT = 4


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


def _single(batch: list[dict[str, Any]]) -> dict[str, Any]:
    return batch[0]


def run_shards(
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
    """Extract `shards` (their items, `indices`) into `store`: each shard's views from the loader workers, the
    featurizer's forward queued on `device`, and up to SHARDS_IN_FLIGHT shard writes running while the next shard is
    read and computed; returns where the time went."""
    loader = DataLoader(
        ShardViews(
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

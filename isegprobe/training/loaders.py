"""The data loaders a training run draws its batches from: one for training, one for the validation store.

Benchmarks build their loaders here too, so that what they time is what a run trains on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from isegprobe.cache.preload import available_memory, fits_in_memory, readable_size
from isegprobe.config import TrainConfig
from isegprobe.config_loading import asks_for_workers
from isegprobe.loader_workers import default_loader_workers, require_sensible_workers, worker_processes
from isegprobe.training.click_dataset import ClickTrainingSet, EpochShuffleSampler
from isegprobe.training.points_sampler import MultiPointSampler
from isegprobe.training.sample_weights import draw_probabilities, read_sample_scores
from isegprobe.training.schedule import drops_last_batch

log = logging.getLogger(__name__)

# Loader workers `data.num_workers: auto` starts on a GPU. Reading and decoding a ViT-L/14 batch of 8 at 448 px took
# 48 ms of an 84 ms step on an H200 in the training process; four workers read four batches in that time.
AUTO_GPU_WORKERS = 4


def training_loader(
    dataset: Dataset, config: TrainConfig, device: torch.device, online: bool, rank: int = 0, world: int = 1
) -> DataLoader:
    """This rank's share of each epoch: one view per image, its target and initial clicks, in batches of
    `data.batch_size / world`. `loader.sampler.start(epoch, skip)` chooses the epoch; `loader.dataset` is the
    `ClickTrainingSet`, one sample per image. `online`: the features are computed in the loop, not read."""
    items = ClickTrainingSet(
        dataset,
        MultiPointSampler(config.sampler),
        config.seed,
        with_features=not online,
        views_per_item=int(getattr(dataset, "num_views", 1)),
        keep_background_prob=config.data.keep_background_prob,
        augment=config.data.augment,
        draw_on_device=draws_on_device(config, device),
    )
    probabilities = None
    if config.data.sample_weights is not None:
        scores = read_sample_scores(config.data.sample_weights)
        item_ids = [dataset.item_ids[item] for item in dataset.items]
        probabilities = draw_probabilities(item_ids, scores, config.data.sample_weights_gamma)
    order = EpochShuffleSampler(len(items), seed=config.seed, rank=rank, world=world, probabilities=probabilities)
    drop_last = drops_last_batch(len(items), config.data.batch_size)
    return _loader(items, config, device, order, config.data.batch_size // world, dataset, drop_last)


def validation_loader(dataset: Dataset, config: TrainConfig, device: torch.device, online: bool) -> DataLoader:
    """Every entry of the validation store, in order, with the same targets and clicks at every epoch."""
    items = ClickTrainingSet(
        dataset,
        MultiPointSampler(config.sampler),
        config.seed,
        with_features=not online,
        draw_on_device=draws_on_device(config, device),
    )
    order = EpochShuffleSampler(len(dataset), seed=config.seed, shuffle=False)
    return _loader(items, config, device, order, config.data.batch_size, dataset, drop_last=False)


def draws_on_device(config: TrainConfig, device: torch.device) -> bool:
    """Whether the batches' targets and initial clicks are drawn on the training device (`data.click_sampling`)."""
    setting = config.data.click_sampling
    return setting == "device" or (setting == "auto" and device.type == "cuda")


def preloads(
    config: TrainConfig, device: torch.device, online: bool, datasets: Sequence[Dataset | None], world: int = 1
) -> bool:
    """Whether `data.preload` reads the stores into memory: as said when true or false. `auto` does on a GPU, where
    a step from memory was 49 ms against 84 from the store (ViT-L/14, batch 8 at 448 px, an H200), for a run from
    the cache (online, the features would be held for nothing) without loader workers, when every store's entries
    in use fit in the memory available, once for each of the `world` ranks; what it decided is logged."""
    setting = config.data.preload
    if setting != "auto":
        return bool(setting)
    if device.type != "cuda" or online or asks_for_workers(config.data):
        return False
    stores = [dataset for dataset in datasets if dataset is not None]
    if not all(hasattr(data, "preload_bytes") for data in stores):
        return False
    needed = world * sum(data.preload_bytes() for data in stores)
    available = available_memory()
    fits = fits_in_memory(needed, available)
    log.info(
        "data.preload auto: the stores' entries in use take %s (%d rank(s)) of the %s of memory available: %s",
        readable_size(needed),
        world,
        readable_size(available),
        "read into memory before the first step" if fits else "read from the store at every step",
    )
    return fits


def preload_device(config: TrainConfig, device: torch.device) -> torch.device | None:
    """Where `data.preload` keeps a store: on a GPU that draws the clicks and takes no augmentations, its own
    memory (the samples are then made there, with tensor operations); else host memory (None)."""
    if device.type == "cuda" and draws_on_device(config, device) and not config.data.augment.enabled:
        return device
    return None


def loader_workers(config: TrainConfig, device: torch.device, dataset: Dataset) -> int:
    """`data.num_workers`, with `auto` resolved: on a GPU, AUTO_GPU_WORKERS (at most the cores per torchrun rank)
    for a dataset read as training goes, none for a preloaded store; none on a CPU."""
    setting = config.data.num_workers
    if setting != "auto":
        require_sensible_workers(setting, "data.num_workers")
        return setting
    if device.type != "cuda" or getattr(dataset, "preloaded", False):
        return 0
    return min(AUTO_GPU_WORKERS, default_loader_workers())


def _on_host(dataset: Dataset) -> bool:
    return getattr(dataset, "device", None) is None


def _loader(
    items: Dataset,
    config: TrainConfig,
    device: torch.device,
    sampler: EpochShuffleSampler,
    batch_size: int,
    dataset: Dataset,
    drop_last: bool,
) -> DataLoader:
    """Workers are spawned, not forked: tensorstore (the cache reader) and CUDA both break in a forked child once
    the parent has used them. They persist across epochs, so the start-up cost is paid once, and they end with
    the training process, however it ends. Batches from the host are pinned for the copy to a GPU. `drop_last`:
    training's epochs are their full batches (`StepSchedule`); validation reads every entry."""
    workers = loader_workers(config, device, dataset)
    pinned = _on_host(dataset)
    return DataLoader(
        items,
        batch_size=batch_size,
        sampler=sampler,
        pin_memory=pinned and device.type == "cuda",
        persistent_workers=workers > 0,
        drop_last=drop_last,
        **worker_processes(workers, "spawn"),
    )

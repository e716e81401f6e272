"""Cached items -> training samples: a target object, its valid pixels and RITM's initial clicks.

Sampling is a function of (seed, epoch, item index) alone: the loader's sampler yields (epoch, index) keys, so
DataLoader workers (persistent or not) and resumed runs draw exactly the same views, targets and clicks.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from isegprobe.training.points_sampler import MultiPointSampler


def valid_pixels(ignore: np.ndarray, valid_box: np.ndarray) -> np.ndarray:
    """Pixels that count for loss and clicks: inside the real image (not the square padding) and not ignored."""
    y0, x0, y1, x1 = (int(value) for value in valid_box)
    inside = np.zeros(ignore.shape, dtype=bool)
    inside[y0:y1, x0:x1] = True
    return inside & ~ignore


# Keeps the per-epoch view draw apart from the target and click draws that share (seed, epoch).
_VIEW_STREAM = 1


class ClickTrainingSet(Dataset):
    """Wraps a cache reader whose entries are dicts (features, image, labels, ignore, valid_box, item, view).

    The reader's entries are item-major, `views_per_item` cached views of each item. The cached views are the
    augmentation, so the set has one sample per item, and each epoch shows it in one of its views, drawn at random:
    an epoch sees every image once, as RITM's and the seed's epochs see every image once in one random
    augmentation, however many views the store holds.
    """

    def __init__(
        self,
        entries: Dataset,
        sampler: MultiPointSampler,
        seed: int = 0,
        with_features: bool = True,
        views_per_item: int = 1,
    ) -> None:
        if len(entries) % views_per_item:
            raise ValueError(f"{len(entries)} entries are not {views_per_item} views of each item")
        self.entries = entries
        self.sampler = sampler
        self.seed = seed
        self.with_features = with_features
        self.views_per_item = views_per_item

    def __len__(self) -> int:
        return len(self.entries) // self.views_per_item

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        epoch, position = key if isinstance(key, tuple) else (0, key)
        view = 0
        if self.views_per_item > 1:
            view = int(np.random.default_rng([self.seed, _VIEW_STREAM, epoch, position]).integers(self.views_per_item))
        index = position * self.views_per_item + view
        item: Mapping[str, Any] = self.entries[index]
        labels = _as_numpy(item["labels"])
        valid = valid_pixels(_as_numpy(item["ignore"]).astype(bool), _as_numpy(item["valid_box"]))
        sampled = self.sampler.sample(labels, valid, np.random.default_rng([self.seed, epoch, index]))
        sample = {
            "image": torch.as_tensor(item["image"]),
            "target": torch.from_numpy(sampled.mask),
            "valid": torch.from_numpy(valid),
            "clicks": torch.from_numpy(sampled.clicks),
            "item": int(item["item"]),
            "view": int(item["view"]),
        }
        if self.with_features:
            sample["features"] = torch.as_tensor(item["features"])
        return sample


def _as_numpy(value: Any) -> np.ndarray:
    return value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


class EpochShuffleSampler(Sampler[tuple[int, int]]):
    """Yields (epoch, index) in a per-epoch permutation fixed by the seed; `start` skips what a resumed run has seen.

    Under torchrun every rank walks the same permutation and takes every `world`-th entry of it, cut to a multiple
    of `world` so that all ranks run the same number of steps; `skip` counts entries of the whole permutation.
    """

    def __init__(self, num_items: int, seed: int = 0, shuffle: bool = True, rank: int = 0, world: int = 1) -> None:
        self.num_items = num_items
        self.seed = seed
        self.shuffle = shuffle
        self.rank, self.world = rank, world
        self.epoch = 0
        self.skip = 0

    def start(self, epoch: int, skip: int = 0) -> None:
        self.epoch = epoch
        self.skip = skip

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = np.arange(self.num_items)
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.num_items)
        remaining = order[self.skip :]
        for index in remaining[self.rank : len(remaining) - len(remaining) % self.world : self.world]:
            yield self.epoch, int(index)

    def __len__(self) -> int:
        return max(0, self.num_items - self.skip) // self.world

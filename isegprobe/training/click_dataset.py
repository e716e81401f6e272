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

from isegprobe.config import AugmentConfig
from isegprobe.data.instance_maps import as_uint16_ids
from isegprobe.errors import UserError
from isegprobe.training.augment import photometric, shift_rotate
from isegprobe.training.points_sampler import MultiPointSampler


def valid_pixels(ignore: np.ndarray, valid_box: np.ndarray) -> np.ndarray:
    """Pixels that count for loss and clicks: inside the real image (not the square padding) and not ignored."""
    y0, x0, y1, x1 = (int(value) for value in valid_box)
    inside = np.zeros(ignore.shape, dtype=bool)
    inside[y0:y1, x0:x1] = True
    return inside & ~ignore


def valid_pixels_tensor(ignore: torch.Tensor, valid_box: torch.Tensor) -> torch.Tensor:
    """`valid_pixels` for an ignore mask kept as a tensor, on its device (the box is on the host)."""
    y0, x0, y1, x1 = (int(value) for value in valid_box)
    inside = torch.zeros(ignore.shape, dtype=torch.bool, device=ignore.device)
    inside[y0:y1, x0:x1] = True
    return inside & ~ignore


# Keep the per-epoch view draw, the redraws of empty views and the augmentations apart from the target and click
# draws that share (seed, epoch).
_VIEW_STREAM = 1
_REDRAW_STREAM = 2
_AUGMENT_STREAM = 3


class ClickTrainingSet(Dataset):
    """Wraps a cache reader whose entries are dicts (features, image, labels, ignore, valid_box, item, view).

    The reader's entries are item-major, `views_per_item` cached views of each item. The cached views are the
    augmentation, so the set has one sample per item, and each epoch shows it in one of its views, drawn at random:
    an epoch sees every image once, as RITM's and iSegProbe's epochs see every image once in one random
    augmentation, however many views the store holds. A view without any object is drawn again among the others
    unless a coin with `keep_background_prob` keeps it; `augment` adds the on-the-fly augmentations.

    With `draw_on_device` a sample carries its labels and its seed (`sample_seed`) instead of a target and clicks:
    the trainer draws those for the whole batch on its device (batch_sampler.py), the same ones. Without
    augmentations the sample is then made with tensor operations, so that entries kept on the device (`preload`
    onto it) stay there.
    """

    def __init__(
        self,
        entries: Dataset,
        sampler: MultiPointSampler,
        seed: int = 0,
        with_features: bool = True,
        views_per_item: int = 1,
        keep_background_prob: float = 1.0,
        augment: AugmentConfig | None = None,
        draw_on_device: bool = False,
    ) -> None:
        if len(entries) % views_per_item:
            raise ValueError(f"{len(entries)} entries are not {views_per_item} views of each item")
        augment = augment or AugmentConfig()
        if augment.shift_rotate and with_features:
            raise UserError(
                "data.augment.shift_rotate: cached features cannot follow a rotation; it needs online training "
                "(--online, or fusion before_backbone)"
            )
        self.entries = entries
        self.sampler = sampler
        self.seed = seed
        self.with_features = with_features
        self.views_per_item = views_per_item
        self.keep_background_prob = keep_background_prob
        self.augment = augment
        self.draw_on_device = draw_on_device

    def __len__(self) -> int:
        return len(self.entries) // self.views_per_item

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        epoch, position = key if isinstance(key, tuple) else (0, key)
        index, item = self._draw_view(epoch, position)
        seed = [self.seed, epoch, index]
        if self.draw_on_device and not self.augment.enabled:
            sample = self._tensor_pixels(item)
        else:
            sample = self._host_pixels(item, epoch, index, seed)
        if self.draw_on_device:
            sample["sample_seed"] = torch.tensor(seed, dtype=torch.int64)
        sample["item"], sample["view"] = int(item["item"]), int(item["view"])
        if self.with_features:
            sample["features"] = torch.as_tensor(item["features"])
        return sample

    def _host_pixels(self, item: Mapping[str, Any], epoch: int, index: int, seed: list[int]) -> dict[str, Any]:
        """Image and valid pixels made with NumPy and OpenCV (augmented, when asked for), with the labels the device
        draws from, or with the target and clicks drawn here."""
        image = _as_numpy(item["image"])
        labels = as_uint16_ids(_as_numpy(item["labels"]))
        valid = valid_pixels(_as_numpy(item["ignore"]).astype(bool), _as_numpy(item["valid_box"]))
        if self.augment.enabled:
            image, labels, valid = self._augmented(image, labels, valid, epoch, index)
        sample = {"image": torch.from_numpy(np.ascontiguousarray(image)), "valid": torch.from_numpy(valid)}
        if self.draw_on_device:
            sample["labels"] = torch.from_numpy(labels.astype(np.int32))
        else:
            sampled = self.sampler.sample(labels, valid, np.random.default_rng(seed))
            sample["target"] = torch.from_numpy(sampled.mask)
            sample["clicks"] = torch.from_numpy(sampled.clicks)
        return sample

    def _tensor_pixels(self, item: Mapping[str, Any]) -> dict[str, Any]:
        """Image, valid pixels and labels of an entry whose target and clicks the device draws, by tensor operations
        where the entry is (the same values as the NumPy way)."""
        return {
            "image": torch.as_tensor(item["image"]),
            "valid": valid_pixels_tensor(torch.as_tensor(item["ignore"]).bool(), torch.as_tensor(item["valid_box"])),
            "labels": torch.as_tensor(item["labels"]).int(),
        }

    def _draw_view(self, epoch: int, position: int) -> tuple[int, Mapping[str, Any]]:
        """(entry index, entry) of the item's view for this epoch: the epoch's draw, or, when that view holds no
        object and the coin says redraw, the first of the item's other views (in a drawn order) that holds one."""
        view = 0
        if self.views_per_item > 1:
            view = int(np.random.default_rng([self.seed, _VIEW_STREAM, epoch, position]).integers(self.views_per_item))
        index = position * self.views_per_item + view
        item: Mapping[str, Any] = self.entries[index]
        if self.keep_background_prob >= 1.0 or bool(item["labels"].any()):
            return index, item
        rng = np.random.default_rng([self.seed, _REDRAW_STREAM, epoch, position])
        if rng.random() < self.keep_background_prob:
            return index, item
        for other in rng.permutation(self.views_per_item):
            if other == view:
                continue
            candidate = self.entries[position * self.views_per_item + int(other)]
            if bool(candidate["labels"].any()):
                return position * self.views_per_item + int(other), candidate
        return index, item

    def _augmented(
        self, image: np.ndarray, labels: np.ndarray, valid: np.ndarray, epoch: int, index: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The on-the-fly augmentations of one sample (image [3, H, W] uint8), from its own random stream."""
        rng = np.random.default_rng([self.seed, _AUGMENT_STREAM, epoch, index])
        pixels = np.ascontiguousarray(image.transpose(1, 2, 0))
        if self.augment.shift_rotate:
            pixels, labels, valid = shift_rotate(pixels, labels, valid, rng)
        if self.augment.photometric:
            pixels = photometric(pixels, rng)
        return np.ascontiguousarray(pixels.transpose(2, 0, 1)), labels, valid


def _as_numpy(value: Any) -> np.ndarray:
    return value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


class EpochShuffleSampler(Sampler[tuple[int, int]]):
    """Yields (epoch, index) in a per-epoch permutation fixed by the seed; `start` skips what a resumed run has seen.

    With `probabilities` an epoch is instead as many draws with replacement, each item with its probability (RITM's
    weighted SBD sampling), fixed by the seed in the same way. Under torchrun every rank walks the same order and
    takes every `world`-th entry of it, cut to a multiple of `world` so that all ranks run the same number of steps;
    `skip` counts entries of the whole order.
    """

    def __init__(
        self,
        num_items: int,
        seed: int = 0,
        shuffle: bool = True,
        rank: int = 0,
        world: int = 1,
        probabilities: np.ndarray | None = None,
    ) -> None:
        self.num_items = num_items
        self.seed = seed
        self.shuffle = shuffle
        self.rank, self.world = rank, world
        self.probabilities = probabilities
        self.epoch = 0
        self.skip = 0

    def start(self, epoch: int, skip: int = 0) -> None:
        self.epoch = epoch
        self.skip = skip

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = np.arange(self.num_items)
        if self.probabilities is not None:
            order = np.random.default_rng([self.seed, self.epoch]).choice(
                self.num_items, size=self.num_items, p=self.probabilities
            )
        elif self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.num_items)
        remaining = order[self.skip :]
        for index in remaining[self.rank : len(remaining) - len(remaining) % self.world : self.world]:
            yield self.epoch, int(index)

    def __len__(self) -> int:
        return max(0, self.num_items - self.skip) // self.world

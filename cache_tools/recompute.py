"""A few stored images featurized again by the featurizer their store records, and compared with the stored features.

Checksums show that a store's bytes are the ones its extraction wrote, not that the extraction computed the right
features: a store made by another version of isegprobe or timm, or by code that was being edited, passes them. The
featurizer is built again from the store's provenance (its weights file, hub weights or seeded random weights) and
run on the stored pixels of each view, as extraction ran it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from isegprobe.cache import CachedDataset, FeatureStore
from isegprobe.data.preprocess import normalize_images
from isegprobe.devices import featurizer_autocast
from isegprobe.errors import UserError

# The lowest cosine similarity between a token's stored and recomputed features that counts as agreement. The same
# code on the same machine gives the same bits (0.999999: the cosine's own rounding); features extracted under bf16
# autocast on a GPU matched a CPU's to a token cosine of 0.99999; a random-weight ViT-S/14 store of the built-in
# scenes normalized with its colour channels in reverse order had tokens down to 0.85.
AGREEMENT = 0.999
BATCH = 8


@dataclass(frozen=True)
class Recomputed:
    """How the recomputed features of `entries` stored images compare with the stored ones: the lowest cosine
    similarity of a token's features over all of them, the largest difference of one value, and where the lowest
    similarity is."""

    entries: int
    items: int
    lowest_cosine: float
    largest_difference: float
    where: str

    @property
    def agrees(self) -> bool:
        return self.lowest_cosine >= AGREEMENT


def recompute_features(path: str | Path, count: int, device: str = "cpu", weights: str | None = None) -> Recomputed:
    """Featurize again every view of `count` finished items of the store at `path`, spread over its items, with the
    featurizer it records (`weights` in place of the recorded weights, e.g. a file that moved)."""
    from isegprobe.featurizers import recreate_featurizer  # imports timm, which `isegprobe cache --help` must not

    store = FeatureStore.open(path)
    finished = np.flatnonzero(store.done_mask())
    if len(finished) == 0:
        raise UserError(f"{path}: no finished item whose features could be computed again")
    spread = np.linspace(0, len(finished) - 1, min(count, len(finished))).round().astype(int)
    dataset = CachedDataset(path, items=sorted({int(finished[index]) for index in spread}))
    target = torch.device(device)
    featurizer = recreate_featurizer(dataset.provenance, weights=weights).to(target)
    lowest, largest, where = 1.0, 0.0, ""
    for start in range(0, len(dataset), BATCH):
        entries = [dataset[index] for index in range(start, min(start + BATCH, len(dataset)))]
        stored = torch.stack([entry["features"] for entry in entries]).float()
        computed = _featurized(featurizer, [entry["image"] for entry in entries], target).float().cpu()
        similarity = F.cosine_similarity(stored, computed, dim=1).flatten(1).amin(1)
        worst = int(similarity.argmin())
        if float(similarity[worst]) < lowest or not where:
            lowest, where = float(similarity[worst]), _entry_name(dataset, entries[worst])
        largest = max(largest, float((stored - computed).abs().max()))
    return Recomputed(len(dataset), len(dataset.items), lowest, largest, where)


@torch.inference_mode()
def _featurized(featurizer: torch.nn.Module, images: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """uint8 [3, S, S] images -> float16 features, as extraction computes them: the images laid out channels-last
    (the layout decides which kernels run), normalized, under the featurizer's autocast on `device`."""
    pixels = torch.stack([image.permute(1, 2, 0) for image in images]).to(device)
    normalized = normalize_images(pixels.permute(0, 3, 1, 2), featurizer.mean, featurizer.std)
    with featurizer_autocast(device):
        return featurizer(normalized).to(torch.float16)


def _entry_name(dataset: CachedDataset, entry: dict) -> str:
    views = dataset.store.attrs["views"]
    return f"item {entry['item']} ({dataset.item_ids[entry['item']]}), view {views[entry['view']]}"

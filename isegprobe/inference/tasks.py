"""Objects to evaluate, from a feature store (no featurizer) or straight from a dataset (featurizer online)."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator

import numpy as np
import torch

from isegprobe.cache import CachedDataset, FeatureStore
from isegprobe.cache.image_match import require_the_stored_image, working_image
from isegprobe.cache.reader import open_tensorstore, read_items
from isegprobe.data import SampleSource
from isegprobe.data.base import PerInstanceSource
from isegprobe.data.instance_maps import ids_present
from isegprobe.data.preprocess import make_view, parse_views
from isegprobe.data.sample import Sample
from isegprobe.errors import UserError
from isegprobe.inference.evaluation import ObjectTask
from isegprobe.inference.predictor import WorkingView


def image_ids_of(object_ids: Collection[str]) -> set[str]:
    """The sample ids that objects with these ids can come from (see `_objects` for how object ids are made)."""
    return set(object_ids) | {object_id.rsplit("_", 1)[0] for object_id in object_ids}


def distinct_objects(tasks: Iterable[ObjectTask], dataset: str) -> Iterator[ObjectTask]:
    """`tasks`, stopped at an object id made twice. The items' ids are distinct (`create_dataset` checks), but an
    image named like another image's object (`cat_1` beside a `cat` of two objects) makes one object id of two
    objects: results keyed by it would keep one curve, and a resumed run skip the other object."""
    seen: set[str] = set()
    for task in tasks:
        if task.id in seen:
            image, instance = task.id.rsplit("_", 1)
            raise UserError(
                f"{dataset}: two objects have the id {task.id!r}: the image of that name, and object {instance} of "
                f"the image {image!r} (an image of several objects numbers them {image}_1, {image}_2, ...); rename "
                "one of the two images"
            )
        seen.add(task.id)
        yield task


def _objects(sample: Sample, view: WorkingView, flip_view: WorkingView | None) -> Iterator[ObjectTask]:
    """Every instance of the sample; an image with one object keeps its own id."""
    count = sample.num_instances
    for instance in range(1, count + 1):
        gt = sample.labels == instance
        if not gt.any():
            continue
        object_id = sample.id if count == 1 else f"{sample.id}_{instance}"
        yield ObjectTask(object_id, gt, sample.ignore & ~gt, sample.image, view, flip_view)


def object_count(labels: np.ndarray) -> int:
    """The objects `_objects` makes of a label map: its instance ids that cover at least one pixel."""
    return int(np.count_nonzero(ids_present(labels)[1:])) if labels.size else 0


def cached_object_count(store_path: str) -> int:
    """The objects of a store's items, counted on its working-size label maps (identity view, a shard per read)
    rather than the dataset's full-size masks, which the evaluation reads anyway: a progress bar's total, known
    before the first object. An object too small to survive the resize to the working size is not counted."""
    store = FeatureStore.open(store_path)
    labels = open_tensorstore(store.path, "labels")[:, store.identity_pixels]
    return sum(
        object_count(item_labels)
        for shard in store.shard_ranges()
        for item_labels in read_items(store, labels, "labels", shard)
    )


def online_object_count(source: SampleSource) -> int:
    """The objects of `source`, from its loader's instance counts where it keeps them (read from its annotations),
    else from one pass over its samples: a progress bar's total, known before the first object."""
    if isinstance(source, PerInstanceSource):
        return len(source)
    counts = getattr(source, "instance_counts", None)
    if counts is not None:
        return sum(counts())
    return sum(object_count(source[index].labels) for index in range(len(source)))


def cached_tasks(
    store_path: str, source: SampleSource, flip: bool, only_items: Collection[str] | None = None
) -> Iterator[ObjectTask]:
    """Objects whose working-size inputs come from the store; masks come from the dataset at full resolution.
    `only_items`: the sample ids to read (all when None). The store is opened (and refused) at once, before any
    result is written."""
    views = ["identity", "hflip"] if flip else ["identity"]
    cached = CachedDataset(store_path, views=views)
    if list(source.ids()) != cached.item_ids:
        raise UserError(f"{store_path}: its items differ from the dataset at {source.root}; re-extract or fix --root")
    return _cached_objects(cached, source, views, flip, only_items)


def _cached_objects(
    cached: CachedDataset, source: SampleSource, views: list[str], flip: bool, only_items: Collection[str] | None
) -> Iterator[ObjectTask]:
    for position, item in enumerate(cached.items):
        if only_items is not None and cached.item_ids[item] not in only_items:
            continue
        sample = source[item]
        size = sample.image.shape[:2]
        entries = [cached[position * len(views) + v] for v in range(len(views))]
        stored = entries[0]["image"].permute(1, 2, 0).cpu().numpy()  # views[0] is the identity view
        fresh = working_image(sample.image, cached.preprocessing)
        require_the_stored_image(cached.path, cached.item_ids[item], source.root, stored, fresh)
        working = [_working_view(entry["features"], entry["image"], entry["valid_box"], size) for entry in entries]
        yield from _objects(sample, working[0], working[1] if flip else None)


def online_tasks(
    source: SampleSource, size: int, resize: str, flip: bool, only_items: Collection[str] | None = None
) -> Iterator[ObjectTask]:
    """Objects whose features the predictor computes online from freshly preprocessed images; `only_items` as in
    `cached_tasks`."""
    specs = parse_views("identity,hflip" if flip else "identity")
    ids = list(source.ids())
    for index in range(len(source)):
        if only_items is not None and ids[index] not in only_items:
            continue
        sample = source[index]
        views = [make_view(sample, spec, size, resize, seed=0) for spec in specs]
        working = [
            _working_view(None, torch.from_numpy(v.image).permute(2, 0, 1), v.valid_box, sample.image.shape[:2])
            for v in views
        ]
        yield from _objects(sample, working[0], working[1] if flip else None)


def _working_view(features, image: torch.Tensor, valid_box, original_size) -> WorkingView:
    box = tuple(int(v) for v in np.asarray(valid_box))
    return WorkingView(features, image.contiguous(), box, tuple(int(v) for v in original_size))

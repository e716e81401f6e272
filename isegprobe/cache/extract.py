"""Stage one: run the frozen featurizer once over a dataset and fill a feature store.

Resumable by construction: work is done shard by shard, a shard is written atomically after its features exist,
and the `done` record says which items are finished. Under torchrun each rank takes every WORLD_SIZE-th shard.
This module decides which store is written and what is left to do in it; `extract_loop.py` runs the shards through
the featurizer, fed by the loader workers of `shard_views.py`.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from isegprobe import featurizers
from isegprobe.cache.attrs import build_attrs
from isegprobe.cache.chunks import missing_chunk_files
from isegprobe.cache.extract_loop import LoopTimes, run_shards
from isegprobe.cache.image_match import image_mismatch, working_image
from isegprobe.cache.integrity import broken_entries, mark_undone
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
    parse_views,
)
from isegprobe.distributed import barrier, init_from_env, refuse_ranks_that_differ
from isegprobe.errors import UserError
from isegprobe.featurizers import Featurizer
from isegprobe.featurizers.normalization import DEFAULT_NORMALIZATION
from isegprobe.loader_workers import default_loader_workers, require_sensible_workers
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
class ExtractionResult:
    path: Path
    items_total: int
    items_extracted: int  # under torchrun, rank 0's figure counts every rank's items, the others' their own
    seconds: float
    nbytes: int
    repaired: list[str] = field(default_factory=list)  # "item id: what was wrong" (--repair), or a swap finished
    loop: LoopTimes | None = None  # None when nothing was extracted


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
        loop = (
            run_shards(store, featurizer, source, specs, request, device, shards, indices, rank == 0)
            if indices
            else None
        )
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

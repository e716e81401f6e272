"""What a feature store holds: array names, shapes, chunking and codecs, and the attrs that make it trustworthy.

Everything here is written as plain Zarr v3 metadata, so `zarr.open(path)` (or any Zarr v3 reader) sees the
arrays and `zarr.json` is readable JSON without this package.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from isegprobe.errors import UserError

# 2: a flipped or turned view of the identity view keeps no pixels of its own (`pixel_views`). 1: every view's pixels
# stored; such stores still read and verify, but extraction does not add to them.
SCHEMA_VERSION = 2
READABLE_SCHEMA_VERSIONS = (1, 2)

# Keys of the featurizer provenance that a store's fingerprint is made of. `block` and `normed` (which block's output,
# timm's norm applied or not) only the timm_dense family records; elsewhere both are None.
FINGERPRINTED_FEATURIZER_KEYS = (
    "name",
    "architecture",
    "output",
    "weights_sha256",
    "random_seed",
    "patch_size",
    "dim",
    "normalization",
    "block",
    "normed",
)
# Keys that decide whether two extractions give the same features: those, how position embeddings reach another
# grid (MaskCLIP's changed from timm's rule to its authors' own), where DINOv3's RoPE periods come from (its
# official files' own since they were found to differ from timm's) and whether DINOv3's ConvNeXt's last stage
# passes through its final norm (as its authors' dense output does, since 2026-12-06). Runs and results that
# recorded a fingerprint before these keys still find their stores, so the fingerprint leaves them out.
FEATURIZER_IDENTITY_KEYS = (*FINGERPRINTED_FEATURIZER_KEYS, "position_resampling", "rope_periods", "last_stage_norm")
# The keys that say which function of the image a featurizer computes, whatever its weights.
WEIGHTS_IDENTITY_KEYS = ("weights_sha256", "random_seed")
ARCHITECTURE_IDENTITY_KEYS = tuple(key for key in FEATURIZER_IDENTITY_KEYS if key not in WEIGHTS_IDENTITY_KEYS)
# What a provenance written before a key existed meant by leaving it out.
FEATURIZER_IDENTITY_DEFAULTS = {
    "normalization": "model",
    "position_resampling": "timm",
    "rope_periods": "timm",
    "last_stage_norm": "none",
}


def identity_value(provenance: dict[str, Any], key: str) -> Any:
    """`provenance[key]`, or what stores and checkpoints written before that key existed meant by its absence."""
    return provenance.get(key, FEATURIZER_IDENTITY_DEFAULTS.get(key))


def store_fingerprint(attrs: dict[str, Any]) -> str:
    """A digest of what a store's entries are made of: its featurizer's identity, preprocessing, views, dataset split
    (and the loader options its labels were made with) and items. A store extracted again at the same path from other
    data or with another featurizer gets another; the same extraction again, or a copy elsewhere, the same. Runs and
    results record it, to refuse resuming on a store that is no longer the one they began on."""
    made_of = {
        "featurizer": {key: identity_value(attrs["featurizer"], key) for key in FINGERPRINTED_FEATURIZER_KEYS},
        "preprocessing": attrs["preprocessing"],
        "views": attrs["views"],
        "dataset": [attrs["dataset"]["name"], attrs["dataset"]["split"], attrs["dataset"].get("options")],
        "item_ids": attrs["item_ids"],
    }
    return hashlib.sha256(json.dumps(made_of, sort_keys=True).encode()).hexdigest()


# zstd (the default): Blosc zstd level 1 with bit shuffle, for every array. On 448 px GrabCut photos and their
# ViT-S/14 features it stores images in 0.73x their bytes and features in 0.43x their float32 size, against 0.78x
# and 0.43x for zstd level 3 with byte shuffle (the stores before), for a fifth of the CPU on an image (1.1 against
# 5.8 ms) and a third on a feature map (1.2 against 3.2 ms); decoding costs about the same (benchmarks/store_size.py).
# Extraction pays the encoding for every item and view. Its Blosc blocks are 1 MiB, so that a chunk (an entry's
# features, image, labels or mask) is one block or two: Blosc's own choice at level 1 cut a 448 px ViT-S/14 feature
# map into small blocks, each with its own entropy tables, and took 1.94 ms to encode it and 1.08 to decode it into
# 0.823x its bytes, against 1.36, 0.75 and 0.792x (a 448 px image: 1.54, 1.08, 0.764x against 1.29, 0.74, 0.725x).
# Stores made before keep Blosc's choice in their arrays' metadata, which is what reads and resumes them. lz4: level
# 5 with byte shuffle for multi-byte types, features in 0.47x, but decoded about 2.6x faster, which makes
# random-order reads faster than per-image .npz (benchmarks/reader.py); its blocks made no difference.
COMPRESSORS = {
    "zstd": {"name": "blosc", "cname": "zstd", "clevel": 1, "shuffle": "bitshuffle", "blocksize": 1 << 20},
    "lz4": {"name": "blosc", "cname": "lz4", "clevel": 5, "shuffle": "shuffle"},
}
DEFAULT_CODEC = "zstd"
COMPRESSOR = COMPRESSORS[DEFAULT_CODEC]
# Items per shard file of a new store: the unit of atomic writes and of resuming
DEFAULT_ITEMS_PER_SHARD = 16


@dataclass(frozen=True)
class ArraySpec:
    """An array of the store: its per-item-view shape, dtype, whether it has a view axis (and whether that axis
    counts the views or only the views that keep their pixels, `pixels`), and whether each entry is a chunk of its
    own (the large arrays) or a whole shard's entries make one chunk (the few numbers per entry)."""

    name: str
    item_shape: tuple[int, ...]
    dtype: str
    per_view: bool = True
    chunk_per_entry: bool = True
    pixels: bool = False

    def view_count(self, num_views: int, num_pixel_views: int) -> int:
        """The length of the array's view axis in a store of `num_views` views, `num_pixel_views` of them stored
        with their pixels."""
        return num_pixel_views if self.pixels else num_views

    def shape(self, num_items: int, num_views: int) -> tuple[int, ...]:
        """The array's shape for `num_views` entries per item along its view axis (`view_count`)."""
        prefix = (num_items, num_views) if self.per_view else (num_items,)
        return prefix + self.item_shape

    def chunks(self, items_per_shard: int, num_views: int) -> tuple[int, ...]:
        """One chunk per item-view, the unit a training step reads, for the large arrays. The small ones are read
        whole and written a shard at a time: a chunk per entry made zarr's one event-loop thread run its codec
        pipeline once per four integers, and that thread was what extraction on a fast GPU waited for."""
        if not self.chunk_per_entry:
            return self._shard_shape(items_per_shard, num_views)
        return ((1, 1) if self.per_view else (1,)) + self.item_shape

    def shards(self, items_per_shard: int, num_views: int) -> tuple[int, ...] | None:
        """A shard holds whole items (all views), so a writer that owns an item range owns whole shard files; an
        array chunked a shard at a time needs no sharding."""
        return self._shard_shape(items_per_shard, num_views) if self.chunk_per_entry else None

    def _shard_shape(self, items_per_shard: int, num_views: int) -> tuple[int, ...]:
        return ((items_per_shard, num_views) if self.per_view else (items_per_shard,)) + self.item_shape


def array_specs(dim: int, grid: tuple[int, int], size: int) -> list[ArraySpec]:
    return [
        ArraySpec("features", (dim, *grid), "float16"),
        ArraySpec("images", (size, size, 3), "uint8", pixels=True),
        ArraySpec("labels", (size, size), "uint16", pixels=True),
        ArraySpec("ignore", (size, size), "bool", pixels=True),
        ArraySpec("valid_box", (4,), "int32", chunk_per_entry=False),
        ArraySpec("crop_box", (4,), "int32", chunk_per_entry=False),
        ArraySpec("original_size", (2,), "int32", per_view=False, chunk_per_entry=False),
        ArraySpec("checksum", (), "uint32", chunk_per_entry=False),
        ArraySpec("done", (), "uint8", per_view=False, chunk_per_entry=False),
    ]


def store_name(featurizer: str, dataset: str, split: str, size: int, normalization: str = "model") -> str:
    """`vit_small_patch14_dinov2-grabcut-test-448.zarr`: one store per featurizer x dataset x split x size; inputs
    normalized other than by the model's own statistics add it (`dinov2_vits14-imagenet_norm-grabcut-test-224.zarr`)."""
    safe = "".join(ch if ch.isalnum() or ch in "._" else "_" for ch in featurizer)
    if normalization != "model":
        safe = f"{safe}-{normalization}_norm"
    return f"{safe}-{dataset}-{split}-{size}.zarr"


def check_same_featurizer(
    trained: dict[str, Any],
    other: dict[str, Any],
    where: str,
    trained_on: str = "checkpoint",
    keys: tuple[str, ...] = FEATURIZER_IDENTITY_KEYS,
) -> None:
    """A probe only makes sense on features from the featurizer (and weights) it was trained on; `trained_on`
    names where the probe's provenance comes from in the message, `keys` what must agree."""
    differences = [
        f"{key}: {trained_on} {identity_value(trained, key)!r}, {where} {identity_value(other, key)!r}"
        for key in keys
        if identity_value(trained, key) != identity_value(other, key)
    ]
    if differences:
        raise UserError(f"{where}: features from another featurizer than the probe's:\n  " + "\n  ".join(differences))


def mismatches(existing: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """Human-readable differences between a store's attrs and what an extraction would write."""
    problems = []
    for key in FEATURIZER_IDENTITY_KEYS:
        old, new = identity_value(existing["featurizer"], key), identity_value(wanted["featurizer"], key)
        if old != new:
            problems.append(f"featurizer {key}: store has {old!r}, this run has {new!r}")
    for section in ("preprocessing", "views"):
        if existing[section] != wanted[section]:
            problems.append(f"{section}: store has {existing[section]!r}, this run has {wanted[section]!r}")
    for key in ("name", "split"):
        if existing["dataset"][key] != wanted["dataset"][key]:
            problems.append(
                f"dataset {key}: store has {existing['dataset'][key]!r}, this run has {wanted['dataset'][key]!r}"
            )
    # Stores written before the loader's options were recorded do not say them; their other attrs still must match.
    if "options" in existing["dataset"] and existing["dataset"]["options"] != wanted["dataset"]["options"]:
        problems.append(
            f"dataset loader options: store has {existing['dataset']['options']!r}, this run has "
            f"{wanted['dataset']['options']!r}"
        )
    if existing["item_ids"] != wanted["item_ids"]:
        problems.append(
            f"items: store has {len(existing['item_ids'])} items, the dataset now has {len(wanted['item_ids'])} "
            "or they differ in name/order"
        )
    return problems

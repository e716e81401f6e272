"""The attrs an extraction writes: enough to trust, reproduce and refuse to mix stores."""

from __future__ import annotations

from typing import Any

from isegprobe import __version__
from isegprobe.cache.pixel_views import stored_pixel_views
from isegprobe.cache.schema import COMPRESSORS, SCHEMA_VERSION


def preprocessing_attrs(provenance: dict[str, Any], size: int, resize: str) -> dict[str, Any]:
    """How images become the featurizer's input: what a probe needs to see its images as its store saw them."""
    return {
        "size": size,
        "resize": resize,
        "mean": list(provenance["mean"]),
        "std": list(provenance["std"]),
        "image_interpolation": "bilinear",
        "mask_interpolation": "nearest",
    }


def build_attrs(
    provenance: dict[str, Any],
    dataset: dict[str, Any],
    item_ids: list[str],
    views: list[str],
    size: int,
    resize: str,
    items_per_shard: int,
    codec: str = "zstd",
) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "package": {"name": "isegprobe", "version": __version__},
        "featurizer": provenance,
        "preprocessing": preprocessing_attrs(provenance, size, resize),
        "views": views,
        "dataset": dataset,
        "item_ids": item_ids,
        "layout": {
            "items_per_shard": items_per_shard,
            "chunks": "features, images, labels, ignore: one chunk per (item, view), in shards of items_per_shard "
            "whole items; the per-entry boxes, sizes, checksums and done record: one chunk per items_per_shard items",
            "pixel_views": stored_pixel_views(views),
            "pixels": "images, labels and ignore hold the pixel_views only, along their pixel_view axis; a view left "
            "out is the identity view's pixels flipped (hflip: x reversed, vflip: y reversed) or turned (rotK: "
            "K/90 quarter turns counter-clockwise, numpy.rot90)",
            "compressor": COMPRESSORS[codec],
        },
        "completion": {
            "array": "done",
            "meaning": "done[i] == 1 once every array of item i is on disk",
            "items_done": 0,
        },
    }

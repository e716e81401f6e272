"""The feature store on disk: one Zarr v3 group per (featurizer, dataset, split, working size).

Arrays are written one whole shard at a time (through tensorstore, `ArrayWriter`): a shard file is replaced
atomically, so an interrupted extraction loses at most the shards in flight, and the `done` record is written after
the data it vouches for. A new store is built in a sibling folder and renamed into place once its arrays and
attrs are written, so a store under its own name is never half made.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec, BloscShuffle

from isegprobe.cache.array_writer import ArrayWriter
from isegprobe.cache.checksums import CHECKSUM_ARRAY, entry_checksums
from isegprobe.cache.consistency import check_attrs, check_shapes
from isegprobe.cache.pixel_views import PixelSource, pixel_sources, pixel_views
from isegprobe.cache.schema import READABLE_SCHEMA_VERSIONS, ArraySpec, array_specs
from isegprobe.errors import UserError, writing_to
from isegprobe.output_files import enclosing_store

# A store being created lives under its name plus this suffix until it is complete.
STAGING_SUFFIX = ".creating"
# A store that `extract-features --overwrite` extracts anew lives under its name plus this suffix until every item is
# done; the store it replaces stays in place, whole and readable, until then.
REPLACEMENT_SUFFIX = ".replacing"
# The store that a finished replacement displaces, between the two renames that swap them.
REPLACED_SUFFIX = ".replaced"


class FeatureStore:
    """A handle on one store; `attrs` is the plain-JSON description written at creation."""

    def __init__(self, path: Path, group: zarr.Group) -> None:
        self.path = path
        self.group = group
        self.attrs: dict[str, Any] = dict(group.attrs)
        self._writer = ArrayWriter(path)

    @classmethod
    def open(cls, path: str | Path, mode: str = "r") -> FeatureStore:
        """Open an existing store; raises UserError if `path` is not one."""
        path = Path(path)
        if not (path / "zarr.json").is_file():
            if not _exists(path):
                raise UserError(_why_missing(path))
            raise UserError(_not_a_store(path))
        node_type = _node_type(path)
        if node_type != "group":
            raise UserError(f"{path}: a Zarr {node_type}, not a feature store (the folder that holds the arrays)")
        try:
            group = zarr.open_group(str(path), mode=mode)
            if "schema_version" not in group.attrs:
                staged = path.name if path.name.endswith(STAGING_SUFFIX) else f"{path.name}{STAGING_SUFFIX}"
                raise UserError(
                    f"{path}: an unfinished store, whose description (attrs) was never written: a copy of a store "
                    f"still being created ({staged})? Extract it again (extract-features --overwrite)"
                )
            if group.attrs.get("schema_version") not in READABLE_SCHEMA_VERSIONS:
                raise UserError(
                    f"{path}: store schema version {group.attrs.get('schema_version')!r}, "
                    f"this isegprobe reads {' and '.join(map(str, READABLE_SCHEMA_VERSIONS))}"
                )
            attrs = dict(group.attrs)
            check_attrs(path, attrs)
            check_shapes(path, group, attrs)
        except (ValueError, KeyError, TypeError) as error:  # an array's zarr.json that is not valid JSON or Zarr
            raise UserError(
                f"{_unparsed_metadata(path)}: unreadable Zarr metadata ({type(error).__name__}: {error}); extract "
                "the store again (extract-features --overwrite)"
            ) from None
        return cls(path, group)

    @classmethod
    def create(cls, path: str | Path, attrs: Mapping[str, Any], dim: int, grid: tuple[int, int]) -> FeatureStore:
        """Make an empty store whose arrays are sized for `attrs['item_ids']` and `attrs['views']`, replacing any
        store at `path`."""
        path = Path(path)
        staging = staging_path(path)
        if staging.exists():
            shutil.rmtree(staging)
        num_items, num_views, stored = len(attrs["item_ids"]), len(attrs["views"]), len(pixel_views(attrs))
        items_per_shard = attrs["layout"]["items_per_shard"]
        with writing_to(staging):
            group = zarr.open_group(str(staging), mode="w", zarr_format=3)
            for spec in array_specs(dim, grid, attrs["preprocessing"]["size"]):
                views = spec.view_count(num_views, stored)
                zarr.create_array(
                    group.store,
                    name=spec.name,
                    shape=spec.shape(num_items, views),
                    dtype=spec.dtype,
                    chunks=spec.chunks(items_per_shard, views),
                    shards=spec.shards(items_per_shard, views),
                    compressors=blosc_codec(spec.dtype, attrs["layout"]["compressor"]),
                    fill_value=0,
                    dimension_names=_dimension_names(spec),
                )
            group.attrs.update(dict(attrs))
        if path.exists():
            shutil.rmtree(path)
        staging.rename(path)
        return cls.open(path, mode="r+")

    @property
    def num_items(self) -> int:
        return len(self.attrs["item_ids"])

    @property
    def num_views(self) -> int:
        return len(self.attrs["views"])

    @property
    def items_per_shard(self) -> int:
        return int(self.attrs["layout"]["items_per_shard"])

    @property
    def schema_version(self) -> int:
        return int(self.attrs["schema_version"])

    @cached_property
    def pixel_sources(self) -> list[PixelSource]:
        """Where each view's pixels are stored (`cache.pixel_views`)."""
        return pixel_sources(self.attrs)

    @property
    def identity_pixels(self) -> int:
        """Which stored pixel entry of an item is its identity view's (stored as itself), the one that is the image
        as extraction saw it."""
        return self.pixel_sources[self.attrs["views"].index("identity")].stored

    @cached_property
    def feature_dtype(self) -> np.dtype:
        """The features' stored dtype, read once: opening the array reads its metadata from disk, in Python (0.1 ms
        of CPU), which an extraction's writer threads did at every shard, taking turns for the GIL with the loop."""
        return np.dtype(self.group["features"].dtype)

    @property
    def feature_shape(self) -> tuple[int, int, int]:
        return tuple(self.group["features"].shape[2:])

    def shard_ranges(self) -> list[range]:
        step = self.items_per_shard
        return [range(start, min(start + step, self.num_items)) for start in range(0, self.num_items, step)]

    def done_mask(self) -> np.ndarray:
        """Which items are finished; a chunk of the record that is missing means its items are not."""
        try:
            return np.asarray(self.group["done"][:]).astype(bool)
        except (RuntimeError, ValueError) as error:  # Blosc's and Zarr's words for bytes that do not decode
            raise UserError(
                f"{self.path / 'done'}: the completion record cannot be read ({error}); extract the store again "
                "(extract-features --overwrite)"
            ) from None

    def finish_items(
        self, items: range, arrays: Mapping[str, np.ndarray], features: np.ndarray, pixel_sums: np.ndarray
    ) -> None:
        """Write the contiguous `items` (one shard) and mark them done: `arrays` (the stored views' pixels, every
        view's boxes and the items' sizes, as a loader worker made them), their features and the entries' checksums
        all at once, then the `done` record. `pixel_sums` are the CRCs of the pixel entries
        (`checksums.pixel_checksums`), which the checksums continue over the features."""
        window = slice(items.start, items.stop)
        features = np.asarray(features, dtype=self.feature_dtype)
        checksums = entry_checksums(features, pixel_sums, [source.stored for source in self.pixel_sources])
        self._writer.write(window, {**arrays, "features": features, CHECKSUM_ARRAY: checksums})
        self._writer.write(window, {"done": np.ones(len(items), np.uint8)})

    def entry_layouts(self, names: Iterable[str]) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """(shape of one item's entries, dtype) of each array `names` names, for a loader worker to make them in."""
        arrays = {name: self.group[name] for name in names}  # each opening reads the array's metadata from disk
        return {name: (tuple(array.shape[1:]), np.dtype(array.dtype)) for name, array in arrays.items()}

    def record_progress(self) -> None:
        """Refresh the item count in the attrs (the per-item truth is the `done` array)."""
        self._writer.require_in_place()
        completion = dict(self.attrs["completion"])
        completion["items_done"] = int(self.done_mask().sum())
        with writing_to(self.path):
            self.group.attrs["completion"] = completion
        self.attrs["completion"] = completion

    def nbytes_on_disk(self) -> int:
        return sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())


def staging_path(path: Path) -> Path:
    """Where `FeatureStore.create` makes a new store's arrays before moving them to `path`."""
    return path.with_name(path.name + STAGING_SUFFIX)


def _why_missing(path: Path) -> str:
    """Why there is no store at `path`, from what lies beside it: a swap or a creation that stopped half way."""
    if _exists(replaced_path(path)):
        return (
            f"{path}: not there, but {replaced_path(path).name} is beside it: an `extract-features --overwrite` "
            "stopped while swapping the stores; run it again to finish the swap"
        )
    if _exists(staging_path(path)):
        return (
            f"{path}: not there yet, but {staging_path(path).name} is beside it: an `extract-features` creating the "
            "store, or one stopped while creating it; when none runs, run it again to create the store"
        )
    return f"{path} does not exist: not a feature store; create one with `isegprobe extract-features`"


def _not_a_store(path: Path) -> str:
    """Why `path`, which is there, is no store. The folder `extract-features --out` names holds the stores, and is
    the path a user has at hand: the stores in it are named, since the one to give is among them."""
    inside = sorted(child.name for child in path.glob("*.zarr") if (child / "zarr.json").is_file())
    if inside:
        shown = ", ".join(inside[:3]) + (f" and {len(inside) - 3} more" if len(inside) > 3 else "")
        return f"{path}: a folder of feature stores ({shown}), not a store itself; give one of them"
    return f"{path}: not a feature store (no zarr.json); create one with `isegprobe extract-features`"


def replacement_path(path: Path) -> Path:
    """Where `extract-features --overwrite` extracts the store that will replace the one at `path`."""
    return path.with_name(path.name + REPLACEMENT_SUFFIX)


def put_in_place(replacement: FeatureStore, path: Path) -> FeatureStore:
    """Move a finished replacement to `path`, and only then discard what stood there: the old store (a folder, or a
    link to one, whose target is left as it is). Neither is lost between the two renames: a crash there leaves the
    old store under `replaced_path` and the new one under `replacement_path`, which `finish_an_interrupted_swap`
    completes."""
    replaced = replaced_path(path)
    _discard(replaced)
    with writing_to(path):
        path.rename(replaced)
        replacement.path.rename(path)
    _discard(replaced)
    return FeatureStore.open(path, mode="r+")


def replaced_path(path: Path) -> Path:
    """Where `put_in_place` keeps the store it replaces between its two renames."""
    return path.with_name(path.name + REPLACED_SUFFIX)


def finish_an_interrupted_swap(path: Path) -> str | None:
    """Complete a `put_in_place` that stopped between its two renames, which leaves nothing at `path`: the finished
    replacement is moved there, or, if it is not there whole, the old store is moved back. A swap that stopped after
    them leaves only the old store's copy to discard. Returns what was done, if anything was moved."""
    replaced, replacement = replaced_path(path), replacement_path(path)
    if _exists(path):
        _discard(replaced)
        return None
    if not _exists(replaced):
        return None
    with writing_to(path):
        if _is_finished_store(replacement):
            replacement.rename(path)
            _discard(replaced)
            return "an earlier --overwrite stopped between swapping the stores; its new store is now in place"
        replaced.rename(path)
        return "an earlier --overwrite stopped between swapping the stores; the old store is back in place"


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def _is_finished_store(path: Path) -> bool:
    try:
        return bool(FeatureStore.open(path).done_mask().all())
    except UserError:
        return False


def _discard(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def refuse_output_inside_a_store(out: str | Path, option: str = "--out") -> None:
    """An output folder (a run, results) must not be, or lie inside, a Zarr store: `extract-features --overwrite`
    replaces a store's folder whole, with anything written into it."""
    store = enclosing_store(Path(out))
    if store is not None:
        raise UserError(
            f"{option} {out}: inside the feature store {store}, which `extract-features --overwrite` replaces whole "
            "with all it holds; choose a folder outside it"
        )


def _node_type(path: Path) -> str:
    try:
        return str(json.loads((path / "zarr.json").read_text()).get("node_type"))
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as error:
        raise UserError(f"{path / 'zarr.json'}: unreadable Zarr metadata ({error})") from None


def blosc_codec(dtype: str, compressor: Mapping[str, Any]) -> BloscCodec:
    """The Blosc codec of an array of `dtype` in a store whose attrs' `layout.compressor` is `compressor` (with no
    `blocksize`, as stores made before it was set have, Blosc chooses the blocks)."""
    itemsize = np.dtype(dtype).itemsize
    if compressor["shuffle"] == "bitshuffle":
        shuffle = BloscShuffle.bitshuffle
    else:  # byte shuffle, which has nothing to shuffle in one-byte values
        shuffle = BloscShuffle.shuffle if itemsize > 1 else BloscShuffle.noshuffle
    return BloscCodec(
        cname=compressor["cname"],
        clevel=compressor["clevel"],
        shuffle=shuffle,
        typesize=itemsize,
        blocksize=compressor.get("blocksize", 0),
    )


def _dimension_names(spec: ArraySpec) -> tuple[str, ...]:
    names = {
        "features": ("channel", "y", "x"),
        "images": ("y", "x", "rgb"),
        "labels": ("y", "x"),
        "ignore": ("y", "x"),
        "valid_box": ("box",),
        "crop_box": ("box",),
        "original_size": ("hw",),
        "checksum": (),
        "done": (),
    }[spec.name]
    views = ("item", "pixel_view") if spec.pixels else ("item", "view")
    return (views if spec.per_view else ("item",)) + names


def _unparsed_metadata(path: Path) -> Path:
    """The first of the store's array metadata files that is not JSON, to name in the error; the store itself when
    all are JSON and what one of them says is the trouble."""
    for metadata in sorted(path.glob("*/zarr.json")):
        try:
            json.loads(metadata.read_bytes())
        except ValueError:
            return metadata
    return path

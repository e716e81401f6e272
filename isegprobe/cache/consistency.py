"""Whether a store's metadata holds together: the attrs every reader relies on, and array shapes that agree with
them. An edited or half-copied `zarr.json` would otherwise surface as an IndexError deep in a training step, or
worse, as items read from the wrong place."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import zarr

from isegprobe.cache.checksums import CHECKSUM_ARRAY
from isegprobe.cache.pixel_views import check_pixel_views, pixel_views
from isegprobe.cache.schema import array_specs
from isegprobe.errors import UserError

# attrs key -> the type its value must have
_SECTIONS = {
    "featurizer": dict,
    "preprocessing": dict,
    "dataset": dict,
    "layout": dict,
    "completion": dict,
    "views": list,
    "item_ids": list,
}
# (section, key) holding a whole number >= 1
_COUNTS = (
    ("featurizer", "dim"),
    ("featurizer", "patch_size"),
    ("preprocessing", "size"),
    ("layout", "items_per_shard"),
)
# (section, key) holding a name, which `cache inspect` and `cache ls` show and evaluation finds the data by. Every
# store extract-features wrote, of either schema, has them; `preprocessing.resize` is not among them because readers
# take its absence for "stretch".
_NAMES = (
    ("featurizer", "name"),
    ("featurizer", "weights"),
    ("dataset", "name"),
    ("dataset", "split"),
)
# The Blosc settings `layout.compressor` gives, which `cache inspect` shows: key -> the type of its value
_CODEC_KEYS = {"name": str, "cname": str, "clevel": int, "shuffle": str}


class _Absent:
    """What a key that is not there shows as in a message (where None would read as a value)."""

    def __repr__(self) -> str:
        return "nothing (no such key)"


_ABSENT = _Absent()
_REMEDY = "the store's zarr.json was edited or damaged: extract it again (extract-features --overwrite)"


def check_attrs(path: Path, attrs: dict[str, Any]) -> None:
    """Refuse attrs that lack what readers use, naming the key."""
    for key, kind in _SECTIONS.items():
        if not isinstance(attrs.get(key, _ABSENT), kind):
            raise _bad(path, key, f"a {kind.__name__}", attrs.get(key, _ABSENT))
    for section, key in _COUNTS:
        value = attrs[section].get(key, _ABSENT)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise _bad(path, f"{section}.{key}", "a whole number >= 1", value)
    for section, key in _NAMES:
        value = attrs[section].get(key, _ABSENT)
        if not isinstance(value, str) or not value:
            raise _bad(path, f"{section}.{key}", "a non-empty string", value)
    root = attrs["dataset"].get("root", _ABSENT)
    if root is not None and not isinstance(root, str):  # None: built-in data, read from no folder
        raise _bad(path, "dataset.root", "the dataset's folder, or null for built-in data", root)
    codec = attrs["layout"].get("compressor", _ABSENT)
    if not isinstance(codec, dict) or not all(isinstance(codec.get(key), kind) for key, kind in _CODEC_KEYS.items()):
        raise _bad(path, "layout.compressor", f"a Blosc codec's {', '.join(_CODEC_KEYS)}", codec)
    for key in ("views", "item_ids"):
        if not attrs[key] or not all(isinstance(name, str) for name in attrs[key]):
            raise _bad(path, key, "a non-empty list of names", attrs[key])
    repeated = next((name for name, count in Counter(attrs["item_ids"]).items() if count > 1), None)
    if repeated is not None:  # items are found by id: a repeated one reads another item's entry
        raise _bad(path, "item_ids", "distinct names, as a dataset's ids are", f"{repeated!r} more than once")
    if ("pixel_views" in attrs["layout"]) != (attrs["schema_version"] != 1):
        raise _bad(
            path,
            "layout.pixel_views",
            f"a list in a store of schema 2 and none in one of schema 1 (schema_version {attrs['schema_version']})",
            attrs["layout"].get("pixel_views", _ABSENT),
        )
    problem = check_pixel_views(attrs)
    if problem is not None:
        raise _bad(path, "layout.pixel_views", problem, attrs["layout"].get("pixel_views"))


def check_shapes(path: Path, group: zarr.Group, attrs: dict[str, Any]) -> None:
    """Every array the schema lists must exist with the shape the attrs give it (`checksum` may be absent from a
    store of schema 1, made before checksums existed; every store of schema 2 has it, and without it `cache
    verify` could check none of its bytes)."""
    size, patch = attrs["preprocessing"]["size"], attrs["featurizer"]["patch_size"]
    items, views, stored = len(attrs["item_ids"]), len(attrs["views"]), len(pixel_views(attrs))
    for spec in array_specs(attrs["featurizer"]["dim"], (size // patch, size // patch), size):
        # One array at a time, not `group.array_keys()`: that reads every member's zarr.json at once, and when one
        # is unreadable its error leaves the others' reads pending in Zarr's event loop, destroyed at exit with a
        # "Task was destroyed but it is pending!" for each after the one-line error.
        metadata = path / spec.name / "zarr.json"
        try:
            array = group.get(spec.name) if metadata.is_file() else None
        except (ValueError, KeyError, TypeError) as error:  # valid JSON that is no valid Zarr array's metadata
            raise UserError(
                f"{metadata}: unreadable Zarr metadata ({type(error).__name__}: {error}); extract the store again "
                "(extract-features --overwrite)"
            ) from None
        if not isinstance(array, zarr.Array):
            if spec.name == CHECKSUM_ARRAY and attrs["schema_version"] == 1:
                continue
            raise UserError(f"{path}: array {spec.name} is missing; {_REMEDY}")
        actual, expected = tuple(array.shape), spec.shape(items, spec.view_count(views, stored))
        if actual != expected:
            raise UserError(
                f"{path / spec.name}: shape {actual} disagrees with the store's attrs, which give {expected} "
                f"({items} item_ids, {views} views, {stored} with pixels, dim {attrs['featurizer']['dim']}, "
                f"size {size}, patch {patch}); "
                f"{_REMEDY}"
            )


def _bad(path: Path, key: str, expected: str, value: Any) -> UserError:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return UserError(f"{path}: attrs {key}: expected {expected}, got {shown}; {_REMEDY}")

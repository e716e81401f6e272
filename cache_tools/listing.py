"""Every feature store under a folder, one row each: which features, of which data, how far extracted, how big."""

from __future__ import annotations

import os
from pathlib import Path

from cache_tools.verify import extraction_count
from isegprobe.cache import FeatureStore
from isegprobe.cache.chunks import missing_chunk_files
from isegprobe.cache.store import STAGING_SUFFIX
from isegprobe.errors import UserError
from isegprobe.tables import markdown_table

COLUMNS = ["store", "featurizer", "weights", "dataset", "views", "size", "items done", "MiB"]
TEXT_COLUMNS = 5


def find_stores(root: str | Path) -> list[Path]:
    """Each folder under `root` (itself included) with a `zarr.json`, in path order, whether or not it opens as a
    store: a damaged store gets its row rather than vanish from the list. The arrays inside a store are not searched,
    nor a store still being created. Linked folders are followed (stores kept on another disk are often linked into
    a cache folder), each folder once, so a link to a folder above it does not lead round in circles."""
    found = []
    visited = set()
    for folder, subfolders, files in os.walk(root, followlinks=True):
        where = os.stat(folder)
        if (where.st_dev, where.st_ino) in visited:
            subfolders.clear()
            continue
        visited.add((where.st_dev, where.st_ino))
        if folder.endswith(STAGING_SUFFIX) or "zarr.json" in files:
            subfolders.clear()
        if "zarr.json" in files and not folder.endswith(STAGING_SUFFIX):
            found.append(Path(folder))
        subfolders.sort()
    return found


def list_stores(root: str | Path) -> str:
    """A Markdown table of the stores under `root`, one row each; one that does not open, or whose record of
    finished items does not read, says why in its row."""
    stores = find_stores(root)
    if not stores:
        raise UserError(f"{root}: no feature store in it or below it")
    rows = [COLUMNS]
    for path in stores:
        name = str(path.relative_to(root)) if path != Path(root) else path.name
        try:
            rows.append([name, *_described(FeatureStore.open(path))])
        except UserError as error:
            rows.append([name, f"unreadable: {_in_a_cell(error, path)}", *[""] * (len(COLUMNS) - 2)])
    return markdown_table(rows, text_columns=TEXT_COLUMNS)


def _described(store: FeatureStore) -> list[str]:
    """A store's cells after its name."""
    attrs = store.attrs
    featurizer, dataset = attrs["featurizer"], attrs["dataset"]
    return [
        featurizer["name"],
        str(featurizer["weights"]),
        f"{dataset['name']}/{dataset['split']}",
        ",".join(attrs["views"]),
        str(attrs["preprocessing"]["size"]),
        _items_done(store),
        f"{store.nbytes_on_disk() / 2**20:.1f}",
    ]


def _items_done(store: FeatureStore) -> str:
    """Finished items of all, and what `cache verify` would find of the record at a glance: the record alone said
    12/12 of a store that a lost shard file makes every reader refuse, and 0/12 of one that lost the record's own
    chunk."""
    done = int(store.done_mask().sum())
    cell = f"{done}/{store.num_items}"
    lacking = len(missing_chunk_files(store))
    if lacking:
        cell += f", {lacking} lack chunk files (cache verify)"
    counted = extraction_count(store)
    if counted is not None and counted > done:
        cell += f", the extraction counted {counted} (cache verify)"
    return cell


def _in_a_cell(error: UserError, path: Path) -> str:
    """The error's message without the store's path, which the row already names (a file in the store keeps its
    name in it: `zarr.json: ...`), on one line."""
    text = str(error)
    for store in (str(path), str(path.resolve())):
        text = text.removeprefix(f"{store}: ").removeprefix(f"{store}/")
    return " ".join(text.split()).replace("|", "/")

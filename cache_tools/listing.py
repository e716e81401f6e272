"""Every feature store under a folder, one row each: which features, of which data, how far extracted, how big."""

from __future__ import annotations

import os
from pathlib import Path

from isegprobe.cache import FeatureStore
from isegprobe.cache.store import STAGING_SUFFIX
from isegprobe.errors import UserError
from isegprobe.tables import markdown_table

COLUMNS = ["store", "featurizer", "weights", "dataset", "views", "size", "items done", "MiB"]
TEXT_COLUMNS = 5


def find_stores(root: str | Path) -> list[FeatureStore]:
    """Stores under `root` (itself included), opened, in path order; the arrays inside a store are not searched,
    nor a store still being created."""
    found = []
    for folder, subfolders, files in os.walk(root):
        if folder.endswith(STAGING_SUFFIX):
            subfolders.clear()
            continue
        store = _open_store(Path(folder)) if "zarr.json" in files else None
        if store is not None:
            found.append(store)
            subfolders.clear()
        subfolders.sort()
    return found


def _open_store(path: Path) -> FeatureStore | None:
    try:
        return FeatureStore.open(path)
    except UserError:
        return None


def list_stores(root: str | Path) -> str:
    """A Markdown table of the stores under `root`; stores of another schema version are left out."""
    stores = find_stores(root)
    if not stores:
        raise UserError(f"{root}: no feature store in it or below it")
    rows = [COLUMNS]
    for store in stores:
        path, attrs = store.path, store.attrs
        featurizer, dataset = attrs["featurizer"], attrs["dataset"]
        rows.append(
            [
                str(path.relative_to(root)) if path != Path(root) else path.name,
                featurizer["name"],
                str(featurizer["weights"]),
                f"{dataset['name']}/{dataset['split']}",
                ",".join(attrs["views"]),
                str(attrs["preprocessing"]["size"]),
                f"{int(store.done_mask().sum())}/{store.num_items}",
                f"{store.nbytes_on_disk() / 2**20:.1f}",
            ]
        )
    return markdown_table(rows, text_columns=TEXT_COLUMNS)

"""Checks that a store's finished items hold what they claim: chunks that exist and decode, the bytes written at
extraction (per-entry checksums), finite features, sane boxes. The checks themselves live in
`isegprobe.cache.integrity`, which `extract-features --repair` uses too."""

from __future__ import annotations

import sys
from pathlib import Path

from tqdm import tqdm

from isegprobe.cache import FeatureStore
from isegprobe.cache.checksums import CHECKSUM_ARRAY
from isegprobe.cache.integrity import broken_entries


def has_checksums(path: str | Path) -> bool:
    """False for stores made before per-entry checksums were recorded: their bytes cannot be checked."""
    return CHECKSUM_ARRAY in FeatureStore.open(path).group


def verify_store(path: str | Path) -> list[str]:
    """Problems found in the items marked done (an empty list means the store is consistent); the items read so far
    show on a terminal, with an ETA."""
    store = FeatureStore.open(path)
    item_ids = store.attrs["item_ids"]
    total = int(store.done_mask().sum())
    with tqdm(desc="verifying", total=total, unit="item", disable=None, file=sys.stderr) as progress:
        broken = list(broken_entries(store, on_shard=progress.update))
    problems = [f"item {index} ({item_ids[index]}): {problem}" for index, problem in broken]
    recorded = extraction_count(store)
    if recorded is None:
        problems.append(
            f"attrs completion.items_done: expected the number of finished items, got "
            f"{store.attrs['completion'].get('items_done')!r}: the store's zarr.json was edited or damaged (the next "
            "extract-features writes it again)"
        )
    elif recorded > total:  # the last extraction counted more finished items than the done record now holds
        problems.append(
            f"the done record holds {total} finished items where the extraction that wrote the store counted "
            f"{recorded}: its chunk file is missing or was overwritten"
        )
    return problems


def extraction_count(store: FeatureStore) -> int | None:
    """The finished items the last extraction counted (attrs completion.items_done, 0 where absent), which a done
    record that lost its chunk falls short of; None where the attrs hold no count (edited or damaged)."""
    counted = store.attrs["completion"].get("items_done", 0)
    return counted if isinstance(counted, int) and not isinstance(counted, bool) and counted >= 0 else None


def finished_items(path: str | Path) -> tuple[int, int]:
    """(finished items, items) of a store, by its done record."""
    store = FeatureStore.open(path)
    return int(store.done_mask().sum()), store.num_items

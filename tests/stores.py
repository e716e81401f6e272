"""Feature stores for tests, extracted for real with a random-weight ViT-S/14 (the quickstart's featurizer)."""

from __future__ import annotations

from pathlib import Path

from isegprobe.cache.extract import ExtractionRequest, extract

# A store of schema 1, written by the extraction before pixels were stored once (tests/data/README.md)
SCHEMA1_STORE = Path(__file__).parent / "data" / "schema1-vit_small_patch14_dinov2-builtin-test-28.zarr"


def random_vit_store(
    out: Path,
    dataset: str,
    root: Path | None,
    split: str,
    size: int,
    views: str = "identity,hflip",
    featurizer: str = "vit_small_patch14_dinov2",
    **options,
) -> Path:
    """Extract `dataset` (read from `root`) with a random-weight ViT-S/14 (or `featurizer`) and return the store."""
    request = ExtractionRequest(
        featurizer=featurizer,
        weights="random",
        dataset=dataset,
        root=None if root is None else str(root),
        split=split,
        size=size,
        views=views,
        out=str(out),
        workers=0,
        **options,
    )
    return extract(request).path


def builtin_store(out: Path, split: str = "test", size: int = 56, views: str = "identity,hflip", **options) -> Path:
    """The built-in data's store."""
    return random_vit_store(out, "builtin", None, split, size, views, **options)

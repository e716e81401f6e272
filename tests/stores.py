"""Feature stores for tests, extracted for real from the built-in data."""

from __future__ import annotations

from pathlib import Path

from isegprobe.cache.extract import ExtractionRequest, extract


def builtin_store(out: Path, split: str = "test", size: int = 56, views: str = "identity,hflip", **options) -> Path:
    """Extract the built-in data with a random-weight ViT-S/14 (the quickstart's backbone) and return the store."""
    request = ExtractionRequest(
        featurizer="vit_small_patch14_dinov2",
        weights="random",
        dataset="builtin",
        root=None,
        split=split,
        size=size,
        views=views,
        out=str(out),
        workers=0,
        **options,
    )
    return extract(request).path

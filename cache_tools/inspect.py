"""A human-readable summary of a feature store, from its metadata and file sizes alone (no feature is decoded)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from isegprobe.cache import FeatureStore
from isegprobe.cache.chunks import missing_chunk_files
from isegprobe.cache.pixel_views import pixel_views
from isegprobe.cache.schema import identity_value


def describe_store(path: str | Path) -> str:
    store = FeatureStore.open(path)
    attrs = store.attrs
    featurizer, dataset, preprocessing = attrs["featurizer"], attrs["dataset"], attrs["preprocessing"]
    codec = attrs["layout"]["compressor"]
    done = int(store.done_mask().sum())
    lines = [
        f"store      {store.path}  ({store.nbytes_on_disk() / 2**20:.1f} MiB on disk)",
        f"featurizer {featurizer['name']}  weights {_weights(featurizer)}  "
        f"normalization {identity_value(featurizer, 'normalization')}",
        f"           patch {featurizer['patch_size']}  dim {featurizer['dim']}  timm {featurizer.get('timm_version')}",
        f"dataset    {dataset['name']}/{dataset['split']}  root {dataset['root']}",
        f"preprocess size {preprocessing['size']}  resize {_resize(preprocessing)}  views {', '.join(attrs['views'])}",
        _pixels_line(store),
        f"items      {done} of {store.num_items} done  ({store.items_per_shard} items per shard)",
        *_missing_chunks_line(store),
        f"codec      {codec['name']} {codec['cname']} level {codec['clevel']}, {codec['shuffle']}{_blocks(codec)}",
        "arrays     (raw: the decoded bytes of the done items; stored: their files on disk)",
    ]
    arrays = [store.group[name] for name in store.group.array_keys()]
    # Largest first: what the store's size is made of reads at the top.
    for array in sorted(arrays, key=lambda array: (-array.nbytes, array.basename)):
        raw = array.nbytes * done / max(store.num_items, 1)
        stored = sum(file.stat().st_size for file in (store.path / array.basename).rglob("*") if file.is_file())
        ratio = f"{raw / stored:5.1f}x" if stored else "    -"
        lines.append(
            f"  {array.basename:<14} {str(array.dtype):<8} {str(array.shape):<26} chunk {str(array.chunks):<22} "
            f"raw {raw / 2**20:8.2f} MiB  stored {stored / 2**20:8.2f} MiB  {ratio}"
        )
    return "\n".join(lines)


def _pixels_line(store: FeatureStore) -> str:
    """Which views keep their pixels; the others are read as the identity view's, flipped or turned."""
    stored = pixel_views(store.attrs)
    derived = [name for name in store.attrs["views"] if name not in stored]
    layout = f"schema {store.schema_version}: stored for {', '.join(stored)}"
    return f"pixels     {layout}; {', '.join(derived)} read from identity's" if derived else f"pixels     {layout}"


def _missing_chunks_line(store: FeatureStore) -> list[str]:
    """A warning line when finished items lack chunk files (readers refuse such a store)."""
    missing = missing_chunk_files(store)
    if not missing:
        return []
    return [f"           {len(missing)} finished items have chunk files missing: `isegprobe cache verify` lists them"]


def _resize(preprocessing: dict[str, Any]) -> str:
    """How images were brought to the working size; a store that does not say was stretched, as readers take it."""
    return str(preprocessing.get("resize", "stretch"))


def _weights(featurizer: dict[str, Any]) -> str:
    """The weights' source, with the file's sha256 when they came from a file (random and hub weights have none)."""
    sha256 = featurizer.get("weights_sha256")
    return f"{featurizer['weights']}  sha256 {sha256}" if sha256 else str(featurizer["weights"])


def _blocks(codec: dict[str, Any]) -> str:
    """', 1024 KiB blocks' where the store set Blosc's block size; nothing where Blosc chose it."""
    blocksize = codec.get("blocksize", 0)
    return f", {blocksize >> 10} KiB blocks" if blocksize else ""

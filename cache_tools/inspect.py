"""A human-readable summary of a feature store, from its metadata alone (no feature is decoded)."""

from __future__ import annotations

from pathlib import Path

from isegprobe.cache import FeatureStore


def describe_store(path: str | Path) -> str:
    store = FeatureStore.open(path)
    attrs = store.attrs
    featurizer, dataset, preprocessing = attrs["featurizer"], attrs["dataset"], attrs["preprocessing"]
    done = int(store.done_mask().sum())
    lines = [
        f"store      {store.path}  ({store.nbytes_on_disk() / 2**20:.1f} MiB on disk)",
        f"featurizer {featurizer['name']}  weights {featurizer['weights']}  sha256 {featurizer.get('weights_sha256')}",
        f"           patch {featurizer['patch_size']}  dim {featurizer['dim']}  timm {featurizer.get('timm_version')}",
        f"dataset    {dataset['name']}/{dataset['split']}  root {dataset['root']}",
        f"preprocess size {preprocessing['size']}  resize {preprocessing['resize']}  views {', '.join(attrs['views'])}",
        f"items      {done} of {store.num_items} done  ({store.items_per_shard} items per shard)",
        "arrays:",
    ]
    for name in store.group.array_keys():
        array = store.group[name]
        lines.append(f"  {name:<14} {str(array.dtype):<8} {str(array.shape):<28} chunk {array.chunks}")
    return "\n".join(lines)

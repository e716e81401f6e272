"""Feature statistics of a store: per-channel mean and std, and the distribution of token norms.

Upsamplers and heads often normalise their input (LoftUp and FeatUp put a ChannelNorm in front), and ViTs without
registers write a few high-norm "artefact" tokens that dominate any PCA picture and any unnormalised head; these
numbers say how a store's features look before a probe sees them. Means and stds are exact, accumulated in float64
over every done item and view; norm quantiles come from a seeded sample of tokens, so a store of any size streams
through in bounded memory.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from isegprobe.cache import FeatureStore
from isegprobe.cache.chunks import require_chunk_files
from isegprobe.cache.reader import open_tensorstore, read_items
from isegprobe.errors import UserError

NORM_SAMPLE_PER_SHARD = 4096
HIGH_NORM_FACTOR = 2.0  # a token whose norm is above this multiple of the median counts as high-norm


@dataclass
class FeatureStats:
    """What `isegprobe cache stats` reports; `channel_mean` and `channel_std` hold one value per channel."""

    store: str
    items: int
    views: int
    tokens: int
    channel_mean: list[float]
    channel_std: list[float]
    norm_mean: float
    norm_max: float
    norm_quantiles: dict[str, float]
    high_norm_fraction: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def feature_stats(path: str | Path) -> FeatureStats:
    store = FeatureStore.open(path)
    done = store.done_mask()
    if not done.any():
        raise UserError(f"{store.path}: no item is extracted yet; run `isegprobe extract-features` first")
    require_chunk_files(store)
    handle = open_tensorstore(store.path, "features")
    dim = store.feature_shape[0]
    total, total_sq = np.zeros(dim), np.zeros(dim)
    tokens, norm_sum, norm_max = 0, 0.0, 0.0
    samples = []
    rng = np.random.default_rng(0)
    with tqdm(desc="reading", total=int(done.sum()), unit="item", disable=None, file=sys.stderr) as progress:
        for items in store.shard_ranges():
            finished = done[items.start : items.stop]
            if not finished.any():
                continue
            features = read_items(store, handle, "features", items)[finished].astype(np.float64)
            _refuse_non_finite(store, features, np.flatnonzero(finished) + items.start)
            vectors = np.moveaxis(features, 2, -1).reshape(-1, dim)  # [items * views * h * w, C]
            total += vectors.sum(axis=0)
            total_sq += np.square(vectors).sum(axis=0)
            norms = np.linalg.norm(vectors, axis=1)
            tokens += len(norms)
            norm_sum += float(norms.sum())
            norm_max = max(norm_max, float(norms.max()))
            samples.append(rng.choice(norms, size=min(len(norms), NORM_SAMPLE_PER_SHARD), replace=False))
            progress.update(int(finished.sum()))
    mean = total / tokens
    std = np.sqrt(np.maximum(total_sq / tokens - np.square(mean), 0.0))
    sample = np.concatenate(samples)
    quantiles = {f"p{q}": float(np.percentile(sample, q)) for q in (1, 50, 99)}
    return FeatureStats(
        store=str(store.path),
        items=int(done.sum()),
        views=store.num_views,
        tokens=tokens,
        channel_mean=mean.tolist(),
        channel_std=std.tolist(),
        norm_mean=norm_sum / tokens,
        norm_max=norm_max,
        norm_quantiles=quantiles,
        high_norm_fraction=float(np.mean(sample > HIGH_NORM_FACTOR * quantiles["p50"])),
    )


def _refuse_non_finite(store: FeatureStore, features: np.ndarray, indices: np.ndarray) -> None:
    """One NaN or Inf makes every mean, std and norm of its channel or of the store NaN (and the running maximum
    forget it), which would be reported, and written as JSON, as if they were numbers."""
    finite = np.isfinite(features.reshape(len(features), -1)).all(axis=1)
    if not finite.all():
        index = int(indices[np.argmin(finite)])
        raise UserError(
            f"{store.path}: item {index} ({store.attrs['item_ids'][index]}): features are not finite, so its "
            "statistics would be NaN; `isegprobe cache verify` lists every such item"
        )


def format_stats(stats: FeatureStats, top: int = 5) -> str:
    mean, std = np.asarray(stats.channel_mean), np.asarray(stats.channel_std)
    q = stats.norm_quantiles
    lines = [
        f"store      {stats.store}",
        f"tokens     {stats.tokens} ({stats.items} items x {stats.views} views)",
        f"norm       mean {stats.norm_mean:.3f}  p1 {q['p1']:.3f}  median {q['p50']:.3f}  p99 {q['p99']:.3f}  "
        f"max {stats.norm_max:.3f}",
        f"           {100 * stats.high_norm_fraction:.2f} % of tokens above {HIGH_NORM_FACTOR:g}x the median norm",
        f"channels   {len(mean)}: mean in [{mean.min():.3f}, {mean.max():.3f}], std in [{std.min():.3f}, "
        f"{std.max():.3f}], mean |mean| {np.abs(mean).mean():.3f}, mean std {std.mean():.3f}",
        f"           largest std: {_channels(np.argsort(-std)[:top], mean, std)}",
        f"           largest |mean|: {_channels(np.argsort(-np.abs(mean))[:top], mean, std)}",
    ]
    return "\n".join(lines)


def _channels(indices: np.ndarray, mean: np.ndarray, std: np.ndarray) -> str:
    return ", ".join(f"#{index} ({mean[index]:+.3f} +- {std[index]:.3f})" for index in indices)

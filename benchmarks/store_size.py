"""Stored bytes per item of the features vs their raw float32 bytes, for the codecs considered for the store.

The store keeps features as float16 in Blosc(zstd, byte shuffle) chunks, one chunk per (item, view) inside shards
(`isegprobe/cache/schema.py`). This encodes the same float32 features, fresh from the featurizer, with each
candidate in that layout, and reads every item back through the library's reader path (tensorstore, a fresh handle
per round so no read is a cache hit), to weigh size against read time and precision. The extracted store's own
bytes per item are listed too, for the features and for everything an item holds.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import zarr
from common import Check, base_parser, dataset_root, ensure_store, interleave, median, report, setup, table
from zarr.codecs import BloscCodec, BloscShuffle, ZstdCodec

from isegprobe.cache import FeatureStore
from isegprobe.cache.reader import open_tensorstore
from isegprobe.cache.schema import COMPRESSOR
from isegprobe.data import create_dataset
from isegprobe.data.preprocess import make_view, normalize_images, parse_views
from isegprobe.featurizers import create_featurizer

ITEMS_PER_SHARD = 16


@dataclass(frozen=True)
class Candidate:
    name: str
    dtype: str
    codec: BloscCodec | ZstdCodec | None


def candidates() -> list[Candidate]:
    store_codec = BloscCodec(
        cname=COMPRESSOR["cname"], clevel=COMPRESSOR["clevel"], shuffle=BloscShuffle.shuffle, typesize=2
    )
    return [
        Candidate("raw float32", "float32", None),
        Candidate("blosc zstd-3 shuffle, float32", "float32", BloscCodec(cname="zstd", clevel=3, typesize=4)),
        Candidate("raw float16", "float16", None),
        Candidate("blosc lz4-5 shuffle, float16", "float16", BloscCodec(cname="lz4", clevel=5, typesize=2)),
        Candidate(
            f"blosc {COMPRESSOR['cname']}-{COMPRESSOR['clevel']} shuffle, float16 (the store)", "float16", store_codec
        ),
        Candidate(
            "blosc zstd-3 bitshuffle, float16",
            "float16",
            BloscCodec(cname="zstd", clevel=3, shuffle=BloscShuffle.bitshuffle, typesize=2),
        ),
        Candidate("zstd-3 (no shuffle), float16", "float16", ZstdCodec(level=3)),
    ]


@torch.inference_mode()
def fresh_features(args: argparse.Namespace) -> np.ndarray:
    """float32 [N, C, h, w] straight from the featurizer, before any storage rounding."""
    source = create_dataset(args.dataset, dataset_root(args.dataset, args.root), "train")
    (identity,) = parse_views("identity")
    featurizer = create_featurizer(args.featurizer, weights=args.weights).to(args.device)
    outputs = []
    for index in range(min(args.items, len(source))):
        image = make_view(source[index], identity, args.size, "stretch", seed=index * 1009).image
        batch = torch.from_numpy(image).permute(2, 0, 1)[None].to(args.device)
        outputs.append(featurizer(normalize_images(batch, featurizer.mean, featurizer.std)).float().cpu().numpy())
    return np.concatenate(outputs)


def write(candidate: Candidate, features: np.ndarray, folder: Path) -> int:
    """Write in the store's layout (item, view, C, h, w); bytes on disk."""
    values = features.astype(candidate.dtype)[:, None]
    array = zarr.create_array(
        str(folder / candidate.name),
        shape=values.shape,
        dtype=candidate.dtype,
        chunks=(1, 1, *values.shape[2:]),
        shards=(ITEMS_PER_SHARD, 1, *values.shape[2:]),
        compressors=candidate.codec,
        fill_value=0,
        zarr_format=3,
    )
    array[...] = values
    return sum(path.stat().st_size for path in (folder / candidate.name).rglob("*") if path.is_file())


def read_seconds(folder: Path, name: str, count: int, seed: int) -> float:
    """Seconds per item: every item once, in the round's random order, through a fresh (cold-cache) reader handle."""
    handle = open_tensorstore(folder, name)
    order = np.random.default_rng(seed).permutation(count)
    started = time.perf_counter()
    for index in order:
        handle[int(index), 0].read().result()
    return (time.perf_counter() - started) / count


def store_bytes(path: Path) -> dict[str, float]:
    """Bytes per (item, view) of the extracted store: the features alone and everything."""
    store = FeatureStore.open(path)
    entries = store.num_items * store.num_views
    features = sum(f.stat().st_size for f in (path / "features").rglob("*") if f.is_file())
    return {"features": features / entries, "all arrays": store.nbytes_on_disk() / entries}


def parse_args() -> argparse.Namespace:
    parser = base_parser("store_size", __doc__)
    parser.add_argument("--size", type=int, default=448)
    parser.add_argument("--items", type=int, default=8, help="images whose features are encoded")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    setup(args)
    extracted = store_bytes(ensure_store(args, "train", args.size))
    features = fresh_features(args)
    raw = features[0].size * 4
    with tempfile.TemporaryDirectory(prefix="isegprobe-codecs-") as scratch:
        folder = Path(scratch)
        options = candidates()
        sizes = {c.name: write(c, features, folder) / len(features) for c in options}
        reads = interleave(
            {c.name: partial(read_seconds, folder, c.name, len(features)) for c in options}, args.repeats
        )
    rows, results = [], {}
    for c in options:
        stored = features.astype(c.dtype).astype(np.float32)
        error = float(np.abs(stored - features).max())
        read_ms = 1000 * median(reads[c.name])
        rows.append([c.name, f"{sizes[c.name]:.0f}", f"{sizes[c.name] / raw:.3f}", f"{read_ms:.2f}", f"{error:.2g}"])
        results[c.name] = {
            "bytes_per_item": sizes[c.name],
            "vs_raw_float32": sizes[c.name] / raw,
            "read_ms_per_item": read_ms,
            "reads_s": reads[c.name],
            "max_abs_error": error,
        }
    for name, value in extracted.items():
        rows.append([f"extracted store, {name}", f"{value:.0f}", f"{value / raw:.3f}", "-", "-"])
    results["extracted_store_bytes_per_entry"] = extracted
    shape = tuple(features.shape[1:])
    sections = {
        f"features {shape} of {len(features)} images ({args.featurizer}, {args.weights} weights, {args.size} px); "
        f"raw float32 = {raw} B/item": table(
            ["codec", "bytes/item", "vs raw fp32", "read ms/item", "max abs error"], rows
        )
    }
    checks = [Check("extracted store features / raw float32", extracted["features"] / raw, 0.55, at_least=False)]
    report("store_size", args, sections, checks, results)


if __name__ == "__main__":
    main()

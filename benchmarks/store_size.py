"""Stored bytes per item of the features vs their raw float32 bytes, for the codecs considered for the store.

The store keeps features as float16 in Blosc(zstd, byte shuffle) chunks, one chunk per (item, view) inside shards
(`isegprobe/cache/schema.py`). This encodes the same float32 features, fresh from the featurizer, with each
candidate in that layout, and reads every item back through the library's reader path (tensorstore, a fresh handle
per round so no read is a cache hit), to weigh size against write time (extraction pays it for every view of every
item), read time and precision. The working-size images those features came from get the same treatment, since
their compression is most of what an extraction's loader workers spend. The extracted store's own bytes per item
are listed too, for the features and for everything an item holds.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr
from common import Check, base_parser, dataset_root, ensure_store, interleave, median, report, setup, table
from zarr.codecs import BloscCodec, BloscShuffle, ZstdCodec

from isegprobe.cache import FeatureStore
from isegprobe.cache.reader import open_tensorstore
from isegprobe.cache.schema import COMPRESSOR
from isegprobe.cache.store import blosc_codec
from isegprobe.data import create_dataset
from isegprobe.data.preprocess import make_view, normalize_images, parse_views
from isegprobe.featurizers import create_featurizer

ITEMS_PER_SHARD = 16
STORE_CODEC = (
    f"{COMPRESSOR['cname']}-{COMPRESSOR['clevel']} {COMPRESSOR['shuffle']}, {COMPRESSOR['blocksize'] >> 10} KiB blocks"
)
# The store's codec as it was before its Blosc blocks were set: Blosc chose them.
BLOSC_BLOCKS = {name: value for name, value in COMPRESSOR.items() if name != "blocksize"}


@dataclass(frozen=True)
class Candidate:
    name: str
    dtype: str
    codec: BloscCodec | ZstdCodec | None


def candidates() -> list[Candidate]:
    return [
        Candidate("raw float32", "float32", None),
        Candidate("blosc zstd-3 shuffle, float32", "float32", BloscCodec(cname="zstd", clevel=3, typesize=4)),
        Candidate("raw float16", "float16", None),
        Candidate("blosc lz4-5 shuffle, float16", "float16", BloscCodec(cname="lz4", clevel=5, typesize=2)),
        Candidate("blosc zstd-3 shuffle, float16 (schema 1)", "float16", BloscCodec(cname="zstd", typesize=2)),
        Candidate(f"blosc {STORE_CODEC}, float16 (the store)", "float16", blosc_codec("float16", COMPRESSOR)),
        Candidate(
            "blosc zstd-1 bitshuffle, Blosc's blocks, float16 (stores before)",
            "float16",
            blosc_codec("float16", BLOSC_BLOCKS),
        ),
        Candidate(
            "blosc zstd-3 bitshuffle, float16",
            "float16",
            BloscCodec(cname="zstd", clevel=3, shuffle=BloscShuffle.bitshuffle, typesize=2),
        ),
        Candidate("zstd-3 (no shuffle), float16", "float16", ZstdCodec(level=3)),
    ]


@torch.inference_mode()
def fresh_features(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    """float32 [N, C, h, w] straight from the featurizer, before any storage rounding, and the uint8 [N, S, S, 3]
    images they came from."""
    source = create_dataset(args.dataset, dataset_root(args.dataset, args.root), "train")
    (identity,) = parse_views("identity")
    featurizer = create_featurizer(args.featurizer, weights=args.weights).to(args.device)
    outputs, images = [], []
    for index in range(min(args.items, len(source))):
        images.append(make_view(source[index], identity, args.size, "stretch", seed=index * 1009).image)
        batch = torch.from_numpy(images[-1]).permute(2, 0, 1)[None].to(args.device)
        outputs.append(featurizer(normalize_images(batch, featurizer.mean, featurizer.std)).float().cpu().numpy())
    return np.concatenate(outputs), np.stack(images)


def image_candidates() -> list[Candidate]:
    """Codecs for uint8 images (no shuffle: one-byte values), the store's first."""
    plain = BloscShuffle.noshuffle
    return [
        Candidate(f"blosc {STORE_CODEC} (the store)", "uint8", blosc_codec("uint8", COMPRESSOR)),
        Candidate(
            "blosc zstd-1 bitshuffle, Blosc's blocks (stores before)", "uint8", blosc_codec("uint8", BLOSC_BLOCKS)
        ),
        Candidate("blosc zstd-3 (schema 1)", "uint8", BloscCodec(cname="zstd", clevel=3, shuffle=plain)),
        Candidate("blosc lz4-5", "uint8", BloscCodec(cname="lz4", clevel=5, shuffle=plain)),
        Candidate("raw uint8", "uint8", None),
    ]


def write(candidate: Candidate, features: np.ndarray, folder: Path) -> tuple[int, float]:
    """Write in the store's layout (item, view, ...); bytes on disk and seconds of the write."""
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
    started = time.perf_counter()
    array[...] = values
    seconds = time.perf_counter() - started
    return sum(path.stat().st_size for path in (folder / candidate.name).rglob("*") if path.is_file()), seconds


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


def measure(options: list[Candidate], values: np.ndarray, folder: Path, repeats: int) -> dict[str, dict[str, Any]]:
    """Per candidate: bytes, write ms and read ms per item (medians of interleaved rounds, each round writing into
    a folder of its own, reads from the last)."""
    writes = interleave({c.name: lambda r, c=c: write(c, values, folder / str(r)) for c in options}, repeats)
    last = folder / str(repeats - 1)
    reads = interleave({c.name: partial(read_seconds, last, c.name, len(values)) for c in options}, repeats)
    return {
        c.name: {
            "bytes_per_item": writes[c.name][-1][0] / len(values),
            "write_ms_per_item": 1000 * median([seconds for _, seconds in writes[c.name]]) / len(values),
            "read_ms_per_item": 1000 * median(reads[c.name]),
            "reads_s": reads[c.name],
        }
        for c in options
    }


def main() -> None:
    args = parse_args()
    setup(args)
    extracted = store_bytes(ensure_store(args, "train", args.size))
    features, images = fresh_features(args)
    raw, raw_image = features[0].size * 4, images[0].size
    with tempfile.TemporaryDirectory(prefix="isegprobe-codecs-") as scratch:
        measured = measure(candidates(), features, Path(scratch) / "features", args.repeats)
        measured_images = measure(image_candidates(), images, Path(scratch) / "images", args.repeats)
    rows, results = [], {}
    for c in candidates():
        result = measured[c.name]
        result["vs_raw_float32"] = result["bytes_per_item"] / raw
        result["max_abs_error"] = float(np.abs(features.astype(c.dtype).astype(np.float32) - features).max())
        timings = [f"{result['write_ms_per_item']:.2f}", f"{result['read_ms_per_item']:.2f}"]
        rows.append(
            [c.name, f"{result['bytes_per_item']:.0f}", f"{result['vs_raw_float32']:.3f}", *timings]
            + [f"{result['max_abs_error']:.2g}"]
        )
        results[c.name] = result
    for name, value in extracted.items():
        rows.append([f"extracted store, {name}", f"{value:.0f}", f"{value / raw:.3f}", "-", "-", "-"])
    results["extracted_store_bytes_per_entry"] = extracted
    image_rows = []
    for name, result in measured_images.items():
        result["vs_raw"] = result["bytes_per_item"] / raw_image
        image_rows.append(
            [name, f"{result['bytes_per_item']:.0f}", f"{result['vs_raw']:.3f}"]
            + [f"{result['write_ms_per_item']:.2f}", f"{result['read_ms_per_item']:.2f}"]
        )
    results["images"] = measured_images
    shape = tuple(features.shape[1:])
    header = ["codec", "bytes/item", "vs raw", "write ms/item", "read ms/item"]
    sections = {
        f"features {shape} of {len(features)} images ({args.featurizer}, {args.weights} weights, {args.size} px); "
        f"raw float32 = {raw} B/item": table([*header[:2], "vs raw fp32", *header[3:], "max abs error"], rows),
        f"the working-size images those features came from, {args.dataset}; raw = {raw_image} B/item": table(
            header, image_rows
        ),
    }
    checks = [Check("extracted store features / raw float32", extracted["features"] / raw, 0.55, at_least=False)]
    report("store_size", args, sections, checks, results)


if __name__ == "__main__":
    main()

"""Random-order batch reads from the feature store vs the per-image .npz files FeatUp and LoftUp cache vs RAM.

The store has to read as fast as the simplest cache there is, or stage two would be slower than it needs to be.
All three give identical entries (what `CachedDataset` returns: features, image, labels, ignore, valid box),
collated into batches. The store is the extracted one tiled to --items entries, so it holds more than the reader's
chunk cache and real (compressible) features; the .npz files are written uncompressed from the same entries.
The second table is the share of a real training step (probe (b), the cheap one) spent waiting for its batch.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import Check, InMemoryItems, base_parser, ensure_store, interleave, median, report, setup, table
from torch.utils.data import Dataset, default_collate
from train_throughput import ProbeRun, build_mode, run_round, timed_round

from isegprobe.cache import CachedDataset, FeatureStore
from isegprobe.cache.checksums import pixel_checksums
from isegprobe.cache.schema import COMPRESSORS
from isegprobe.config_loading import load_train_config
from isegprobe.training.run_setup import probe_dims

_STORED = ("features", "images", "labels", "ignore", "valid_box", "crop_box", "original_size")


def tiled_store(source_path: Path, out: Path, items: int, codec: str) -> Path:
    """A store of `items` items, the source's items repeated, written through the library's own writer."""
    source = FeatureStore.open(source_path)
    repeat = [index % source.num_items for index in range(items)]
    attrs = dict(source.attrs)
    attrs["item_ids"] = [f"{source.attrs['item_ids'][index]}#{n}" for n, index in enumerate(repeat)]
    attrs["dataset"] = {**attrs["dataset"], "num_items": items}
    attrs["layout"] = {**attrs["layout"], "compressor": COMPRESSORS[codec]}
    grid = tuple(source.feature_shape[1:])
    store = FeatureStore.create(out, attrs, dim=source.feature_shape[0], grid=grid)
    arrays = {name: np.asarray(source.group[name][:]) for name in _STORED}
    for shard in store.shard_ranges():
        part = {name: values[repeat[shard.start : shard.stop]] for name, values in arrays.items()}
        features = part.pop("features")
        store.finish_items(shard, part, features, pixel_checksums(part))
    store.record_progress()
    return out


class NpzItems(Dataset):
    """One uncompressed .npz per entry, read back into the same dict `CachedDataset` gives."""

    def __init__(self, cached: CachedDataset, folder: Path) -> None:
        self.paths = []
        for index in range(len(cached)):
            entry = cached[index]
            path = folder / f"{index:06d}.npz"
            np.savez(
                path,
                features=entry["features"].numpy(),
                images=entry["image"].numpy().transpose(1, 2, 0),
                labels=entry["labels"].numpy().astype(np.uint16),
                ignore=entry["ignore"].numpy(),
                valid_box=entry["valid_box"].numpy().astype(np.int32),
                position=np.array([entry["item"], entry["view"]]),
            )
            self.paths.append(path)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        with np.load(self.paths[index]) as values:
            item, view = (int(value) for value in values["position"])
            return {
                "features": torch.from_numpy(values["features"]),
                "image": torch.from_numpy(np.ascontiguousarray(values["images"].transpose(2, 0, 1))),
                "labels": torch.from_numpy(values["labels"].astype(np.int64)),
                "ignore": torch.from_numpy(values["ignore"]),
                "valid_box": torch.from_numpy(values["valid_box"].astype(np.int64)),
                "item": item,
                "view": view,
            }


def read_batches(dataset: Dataset, order: np.ndarray, batch_size: int) -> float:
    """Seconds to read and collate the batches of `order`, in that order."""
    started = time.perf_counter()
    for start in range(0, len(order) - batch_size + 1, batch_size):
        default_collate([dataset[int(index)] for index in order[start : start + batch_size]])
    return time.perf_counter() - started


def read_rates(args: argparse.Namespace, readers: dict[str, Dataset]) -> dict[str, list[float]]:
    """Batches/s per reader; round r reads the same random order with every reader."""
    count = len(next(iter(readers.values())))

    def rate(name: str, round_index: int) -> float:
        order = np.random.default_rng(round_index).permutation(count)[: args.batches * args.batch_size]
        return args.batches / read_batches(readers[name], order, args.batch_size)

    return interleave({name: partial(rate, name) for name in readers}, args.repeats)


def data_wait(args: argparse.Namespace, store: Path, device: torch.device) -> dict[str, dict[str, float]]:
    """Share of a probe (b) training step spent waiting for data, from the store, per loader worker count."""
    cached = CachedDataset(store)
    config = load_train_config("quickstart")
    size = int(cached.preprocessing["size"])
    run = ProbeRun("b", "low-res probe", "quickstart", size, config.data.batch_size, args.steps, args.repeats)
    dims = probe_dims(cached, None, run.size)
    modes = {
        f"workers={workers}": build_mode(
            load_train_config("quickstart", [f"data.num_workers={workers}"]), cached, dims, device, None
        )
        for workers in sorted({0, args.workers})
    }
    for mode in modes.values():
        run_round(mode, 1, config.optim.lr, device)
    rounds = interleave(
        {name: partial(timed_round, mode, run.steps, config.optim.lr, device) for name, mode in modes.items()},
        args.repeats,
    )
    return {
        name: {
            "data_share": median([r["data"] / r["seconds"] for r in values]),
            "ms_per_step": 1000 * median([r["seconds"] for r in values]) / run.steps,
            "data_ms_per_step": 1000 * median([r["data"] for r in values]) / run.steps,
            "batch_size": run.batch_size,
        }
        for name, values in rounds.items()
    }


def parse_args() -> argparse.Namespace:
    parser = base_parser("reader", __doc__)
    parser.add_argument("--size", type=int, default=448, help="working size of the extracted store")
    parser.add_argument("--items", type=int, default=128, help="entries in the tiled store")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=8, help="random batches per round")
    parser.add_argument("--steps", type=int, default=4, help="training steps per round for the data-wait share")
    parser.add_argument("--workers", type=int, default=1, help="spawned loader workers compared with none")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    device = setup(args)
    source = ensure_store(args, "train", args.size)
    with tempfile.TemporaryDirectory(prefix="isegprobe-reader-") as scratch:
        store = tiled_store(source, Path(scratch) / "tiled.zarr", args.items, "zstd")
        cached = CachedDataset(store)
        cached_lz4 = CachedDataset(tiled_store(source, Path(scratch) / "tiled-lz4.zarr", args.items, "lz4"))
        shape = tuple(cached[0]["features"].shape)
        npz_folder = Path(scratch) / "npz"
        npz_folder.mkdir()
        readers = {
            "store (CachedDataset)": cached,
            "store, --codec lz4": cached_lz4,
            "per-image .npz": NpzItems(cached, npz_folder),
            "in-memory": InMemoryItems(cached),
        }
        for reader in readers.values():
            read_batches(reader, np.arange(min(len(cached), args.batch_size)), args.batch_size)
        rates = read_rates(args, readers)
        waits = data_wait(args, store, device)
    medians = {name: median(values) for name, values in rates.items()}
    per_item = {name: 1000 / (rate * args.batch_size) for name, rate in medians.items()}
    read_rows = [[name, medians[name], per_item[name]] for name in readers]
    store_vs_npz = medians["store (CachedDataset)"] / medians["per-image .npz"]
    store_vs_memory = medians["store (CachedDataset)"] / medians["in-memory"]
    lz4_vs_npz = medians["store, --codec lz4"] / medians["per-image .npz"]
    wait_rows = [
        [name, w["ms_per_step"], w["data_ms_per_step"], f"{100 * w['data_share']:.1f}%"] for name, w in waits.items()
    ]
    first_wait = next(iter(waits.values()))
    sections = {
        f"random-order batches of {args.batch_size} from {args.items} entries (features {shape} fp16)": table(
            ["reader", "batches/s", "ms/item"], read_rows
        )
        + f"\nstore / npz: {store_vs_npz:.3g}\nstore (lz4) / npz: {lz4_vs_npz:.3g}"
        + f"\nstore / in-memory: {store_vs_memory:.3g}",
        f"data wait in a training step from the store (probe (b), batch {first_wait['batch_size']})": table(
            ["loader", "ms/step", "data ms/step", "data share"], wait_rows
        ),
    }
    checks = [
        Check("store / npz batches/s (default zstd)", store_vs_npz, 1.0),
        Check("store / npz batches/s (--codec lz4)", lz4_vs_npz, 1.0),
    ]
    checks += [Check(f"data wait share ({name})", w["data_share"], 0.10, at_least=False) for name, w in waits.items()]
    results = {
        "batches_per_s": rates,
        "median_batches_per_s": medians,
        "ms_per_item": per_item,
        "store_vs_npz": store_vs_npz,
        "store_lz4_vs_npz": lz4_vs_npz,
        "store_vs_memory": store_vs_memory,
        "data_wait": waits,
    }
    report("reader", args, sections, checks, results)


if __name__ == "__main__":
    main()

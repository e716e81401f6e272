"""Stage one's cost over the featurizer itself: `extract` wall time vs a bare featurizer forward on the same images.

Extraction should cost little more than the forward it cannot avoid: decoding, views, compression and writes run
beside it (loader workers, a writer thread). Both modes see the same preprocessed views in the same batch size;
the extraction is the library's real `extract` (what `isegprobe extract-features` runs), into a new folder each
round, with the featurizer built inside it as the command does. The build time is measured on its own too.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import (
    Check,
    base_parser,
    dataset_root,
    extraction_request,
    interleave,
    into_new_folder,
    median,
    report,
    setup,
    synchronize,
)
from common import table as markdown_table

from isegprobe.cache.extract import extract
from isegprobe.data import create_dataset
from isegprobe.data.preprocess import make_view, normalize_images, parse_views
from isegprobe.devices import featurizer_autocast
from isegprobe.featurizers import Featurizer, create_featurizer


def working_images(args: argparse.Namespace) -> np.ndarray:
    """uint8 [M, S, S, 3]: every view of every item, exactly as the extraction preprocesses them."""
    source = create_dataset(args.dataset, dataset_root(args.dataset, args.root), args.split)
    specs = parse_views(args.views)
    images = []
    for index in range(len(source)):
        sample = source[index]
        for v, spec in enumerate(specs):
            images.append(make_view(sample, spec, args.size, "stretch", seed=index * 1009 + v).image)
    return np.stack(images)


@torch.inference_mode()
def bare_forward(featurizer: Featurizer, images: np.ndarray, batch_size: int, device: torch.device) -> float:
    """Seconds for the forward alone: upload, normalize, featurizer, fp16 features back on the host."""
    started = time.perf_counter()
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(images[start : start + batch_size]).to(device).permute(0, 3, 1, 2)
        with featurizer_autocast(device):
            features = featurizer(normalize_images(batch, featurizer.mean, featurizer.std))
        features.to(torch.float16).cpu()
    synchronize(device)
    return time.perf_counter() - started


def timed_extract(args: argparse.Namespace, out: Path) -> float:
    request = extraction_request(args, args.split, args.size, args.views, out, args.batch_size, args.extract_workers)
    with into_new_folder(request) as fresh:
        started = time.perf_counter()
        extract(fresh)
        synchronize(torch.device(args.device))
        return time.perf_counter() - started


def timed_build(args: argparse.Namespace, device: torch.device) -> float:
    started = time.perf_counter()
    create_featurizer(args.featurizer, weights=args.weights).to(device)
    synchronize(device)
    return time.perf_counter() - started


def parse_args() -> argparse.Namespace:
    parser = base_parser("extract_overhead", __doc__)
    parser.set_defaults(repeats=2)
    parser.add_argument("--split", default="test")
    parser.add_argument("--size", type=int, default=448)
    parser.add_argument("--views", default="identity,hflip", help="views per item, as extract-features --views")
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward, as extract-features")
    parser.add_argument("--extract-workers", type=int, default=2, help="extraction loader workers (the CLI default)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    device = setup(args)
    images = working_images(args)
    featurizer = create_featurizer(args.featurizer, weights=args.weights).to(device)
    bare_forward(featurizer, images[: args.batch_size], args.batch_size, device)
    with tempfile.TemporaryDirectory(prefix="isegprobe-extract-") as scratch:
        seconds = interleave(
            {
                "extract": lambda _round: timed_extract(args, Path(scratch)),
                "bare forward": lambda _round: bare_forward(featurizer, images, args.batch_size, device),
                "featurizer build": lambda _round: timed_build(args, device),
            },
            args.repeats,
        )
    medians = {name: median(values) for name, values in seconds.items()}
    count = len(images)
    rows = [[name, value, count / value if name != "featurizer build" else "-"] for name, value in medians.items()]
    overhead = medians["extract"] / medians["bare forward"]
    without_build = (medians["extract"] - medians["featurizer build"]) / medians["bare forward"]
    lines = [
        f"extract / bare forward: {overhead:.3g}",
        f"(extract - featurizer build) / bare forward: {without_build:.3g}",
    ]
    sections = {
        f"{count} images ({args.dataset}/{args.split}, views {args.views}) at {args.size} px, batch {args.batch_size}, "
        f"{args.featurizer}": markdown_table(["mode", "seconds", "images/s"], rows) + "\n" + "\n".join(lines)
    }
    results = {
        "images": count,
        "seconds": seconds,
        "median_seconds": medians,
        "ratio": overhead,
        "ratio_without_build": without_build,
    }
    report(
        "extract_overhead", args, sections, [Check("extract / bare forward", overhead, 1.15, at_least=False)], results
    )


if __name__ == "__main__":
    main()

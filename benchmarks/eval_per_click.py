"""Seconds per click of the click protocol, from the cache vs online (the featurizer rerun at every click).

Evaluation repeats the probe once per click for up to 20 clicks per object; from the cache the featurizer's work is
read back instead of recomputed each time. Both modes run the library's own `evaluate_objects` with RITM's clicker
on the same objects, with the same (untrained, seeded) probe: speed does not depend on how good it is. Seconds per
click are the predictor's time, as `isegprobe evaluate` reports them; wall time adds the clicker and the IoU.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from common import Check, base_parser, dataset_root, ensure_store, interleave, median, report, setup, table

from isegprobe.cache import FeatureStore
from isegprobe.config import load_train_config
from isegprobe.data import SampleSource, create_dataset
from isegprobe.featurizers import Featurizer, create_featurizer
from isegprobe.inference.evaluation import ObjectTask, evaluate_objects
from isegprobe.inference.predictor import Predictor
from isegprobe.inference.tasks import cached_tasks, online_tasks
from isegprobe.model import ISProbe

LOW_RES_PRESET = "quickstart"


def make_probe(preset: str, featurizer: Featurizer) -> ISProbe:
    config = load_train_config(preset)
    torch.manual_seed(config.seed)
    return ISProbe(config.model, featurizer.dim, featurizer.patch_size)


def run_mode(predictor: Predictor, tasks: Iterator[ObjectTask], args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    run = evaluate_objects(predictor, islice(tasks, args.objects), args.clicks, batch_size=args.batch_size)
    wall = time.perf_counter() - started
    return {
        "s_per_click": run.seconds_per_click,
        "wall_s_per_click": wall / max(run.clicks_made, 1),
        "clicks": run.clicks_made,
    }


def parse_args() -> argparse.Namespace:
    parser = base_parser("eval_per_click", __doc__)
    parser.set_defaults(repeats=2)
    parser.add_argument("--split", default="test")
    parser.add_argument("--size", type=int, default=448)
    parser.add_argument("--objects", type=int, default=4, help="objects evaluated per round")
    parser.add_argument("--clicks", type=int, default=5, help="clicks per object")
    parser.add_argument("--batch-size", type=int, default=4, help="objects per probe forward, as evaluate")
    parser.add_argument("--preset", default=LOW_RES_PRESET, help="probe preset; quickstart is the low-res probe (b)")
    return parser.parse_args()


def modes(
    args: argparse.Namespace,
    store: Path,
    source: SampleSource,
    probe: ISProbe,
    featurizer: Featurizer,
    device: torch.device,
) -> dict[str, Callable[[int], dict[str, Any]]]:
    preprocessing = FeatureStore.open(store).attrs["preprocessing"]
    mean, std = preprocessing["mean"], preprocessing["std"]
    cached = Predictor(probe, mean, std, device)
    online = Predictor(probe, mean, std, device, featurizer)
    resize = preprocessing["resize"]
    return {
        "cache": lambda _round: run_mode(cached, cached_tasks(str(store), source, flip=False), args),
        "online": lambda _round: run_mode(online, online_tasks(source, args.size, resize, flip=False), args),
    }


def main() -> None:
    args = parse_args()
    device = setup(args)
    store = ensure_store(args, args.split, args.size)
    source = create_dataset(args.dataset, dataset_root(args.dataset, args.root), args.split)
    featurizer = create_featurizer(args.featurizer, weights=args.weights)
    probe = make_probe(args.preset, featurizer)
    runs = interleave(modes(args, store, source, probe, featurizer, device), args.repeats)
    summary = {
        name: {
            "s_per_click": median([r["s_per_click"] for r in values]),
            "wall_s_per_click": median([r["wall_s_per_click"] for r in values]),
            "clicks_per_round": values[0]["clicks"],
        }
        for name, values in runs.items()
    }
    ratio = summary["online"]["s_per_click"] / summary["cache"]["s_per_click"]
    wall_ratio = summary["online"]["wall_s_per_click"] / summary["cache"]["wall_s_per_click"]
    rows = [[name, s["s_per_click"], s["wall_s_per_click"], s["clicks_per_round"]] for name, s in summary.items()]
    title = (
        f"{args.objects} objects x {args.clicks} clicks ({args.dataset}/{args.split}, {args.size} px, "
        f"probe {args.preset}, {args.featurizer})"
    )
    sections = {
        title: table(["mode", "s/click", "wall s/click", "clicks/round"], rows)
        + f"\nonline / cache s/click: {ratio:.3g}\nonline / cache wall: {wall_ratio:.3g}"
    }
    checks = [Check("(b) online / cache s/click", ratio, 10.0)] if args.preset == LOW_RES_PRESET else []
    results = {
        "modes": summary,
        "online_over_cache": ratio,
        "online_over_cache_wall": wall_ratio,
        "rounds": runs,
    }
    report("eval_per_click", args, sections, checks, results)


if __name__ == "__main__":
    main()

"""Seconds per click of the click protocol, from the cache vs online (the featurizer rerun at every click).

Evaluation repeats the probe once per click for up to 20 clicks per object; from the cache the featurizer's work is
read back instead of recomputed each time. Both modes run the library's own `evaluate_objects` with RITM's clicker
on the same objects, with the same probe. The forward's speed does not depend on how good the probe is, but the
clicker's does: its transforms cover each error region's bounding box, which shrinks click by click for a trained
probe and covers most of the image at every click for an untrained one. So the probe is the preset trained
--train-steps steps on the train split (once; the run is kept in --cache-dir), and --untrained times the clicker's
worst case. Seconds per click are the predictor's time, as `isegprobe evaluate` reports them; wall time adds the
clicker and the IoU.

The CPU time per click outside the forward is the loop's process CPU time (all threads) less the probe's and the
featurizer's forwards and less reading the objects (a cost per object, reported apart): the clicker, the IoU,
preparing the predictor's inputs and mapping its answers back. "cache, before" runs the steps of the loop as it was
before issue 22 (`per_object_reference.py`) on the same objects, and must give the same clicks and IoUs; since it
calls today's predictor, framing and metrics, its time is a lower bound on that loop's (issue 22's target on this
time is measured against the tree itself, by `eval_loop_cpu.py`). "cache" runs the clicker
`isegprobe evaluate` picks (`--clicker auto`: tensor operations on the device on a GPU, OpenCV on the CPU elsewhere);
the other clicker is timed beside it, with the same clicks and IoUs.
OpenCV runs with its default threads, as in `isegprobe evaluate`, unless --opencv-threads says otherwise: on one
thread the loop before gets its transforms from IPP, whose ties fall by chance, so its clicks may then differ.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any

import cv2
import torch
from common import Check, base_parser, dataset_root, ensure_store, interleave, median, report, setup, table
from loop_timing import ForwardClock, timed_reads
from per_object_reference import PerClickPredictor, evaluate_per_object

from isegprobe.cache import CachedDataset, FeatureStore
from isegprobe.config_loading import load_train_config
from isegprobe.data import SampleSource, create_dataset
from isegprobe.featurizers import Featurizer, create_featurizer
from isegprobe.inference.evaluation import EvaluationRun, ObjectTask, evaluate_objects, resolved_clicker
from isegprobe.inference.predictor import Predictor
from isegprobe.inference.tasks import cached_tasks, online_tasks
from isegprobe.model import ISProbe
from isegprobe.training import load_probe, train

LOW_RES_PRESET = "quickstart"


def make_probe(preset: str, featurizer: Featurizer) -> ISProbe:
    config = load_train_config(preset)
    torch.manual_seed(config.seed)
    return ISProbe(config.model, featurizer.dim, featurizer.patch_size)


def probe_name(args: argparse.Namespace) -> str:
    if args.checkpoint:
        return args.checkpoint
    return f"{args.preset}, untrained" if args.untrained else f"{args.preset} trained {args.train_steps} steps"


def benchmark_probe(args: argparse.Namespace, featurizer: Featurizer, device: torch.device) -> ISProbe:
    """The probe to time: --checkpoint, the untrained preset, or the preset trained --train-steps steps on the train
    split's store (trained once, then read back from --cache-dir)."""
    if args.checkpoint:
        return load_probe(args.checkpoint)[0]
    if args.untrained:
        return make_probe(args.preset, featurizer)
    run_dir = args.cache_dir / f"probe-{args.preset}-{args.featurizer}-{args.dataset}-{args.size}-{args.train_steps}"
    if not (run_dir / "last.json").is_file():
        config = load_train_config(args.preset, [f"schedule.max_iters={args.train_steps}"])
        store = ensure_store(args, "train", args.size)
        summary = train(config, CachedDataset(store), run_dir, device=device)
        print(f"trained the probe: {summary.progress()}")
    return load_probe(run_dir)[0]


def run_mode(
    evaluate: Callable[..., EvaluationRun],
    predictor: Predictor,
    clock: ForwardClock,
    tasks: Iterator[ObjectTask],
    args: argparse.Namespace,
    warm_up: bool = False,
) -> dict[str, Any]:
    """One round of a mode; a warm-up round (one click on a batch's worth of objects, not reported) first lets each
    mode's one-time costs (allocations, OpenCV's thread pool, cuDNN's choice of kernels for the batch's shapes,
    which training leaves on) fall outside the timed rounds."""
    objects, clicks = (min(args.batch_size, args.objects), 1) if warm_up else (args.objects, args.clicks)
    reading = [0.0]
    forward_before = clock.seconds
    started, cpu_started = time.perf_counter(), time.process_time()
    run = evaluate(predictor, timed_reads(islice(tasks, objects), reading), clicks, batch_size=args.batch_size)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    made = max(run.clicks_made, 1)
    forward = clock.seconds - forward_before
    return {
        "s_per_click": run.seconds_per_click,
        "wall_s_per_click": wall / made,
        "cpu_ms_per_click_outside_forward": 1000 * (cpu - forward - reading[0]) / made,
        "forward_cpu_ms_per_click": 1000 * forward / made,
        "read_cpu_ms_per_object": 1000 * reading[0] / max(len(run.results), 1),
        "clicks": run.clicks_made,
        "curves": [(curve.id, curve.ious.tolist(), curve.clicks) for curve in run.results],
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
    parser.add_argument(
        "--train-steps",
        type=int,
        default=200,
        help="the probe is the preset trained this many steps on the dataset's train split (as quickstart trains "
        "it; the run is kept in --cache-dir): its errors shrink click by click, as in a real evaluation",
    )
    parser.add_argument(
        "--untrained",
        action="store_true",
        help="time the preset's untrained probe instead, whose errors cover most of the image at every click: the "
        "clicker's worst case",
    )
    parser.add_argument("--checkpoint", help="time this trained probe (run folder or checkpoint) instead")
    parser.add_argument(
        "--opencv-threads",
        type=int,
        default=-1,
        help="OpenCV threads for the clicker's transforms (-1: OpenCV's default, as isegprobe evaluate runs it)",
    )
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
    before = PerClickPredictor(probe, mean, std, device)
    online = Predictor(probe, mean, std, device, featurizer)
    clock = ForwardClock([probe, featurizer])
    resize = preprocessing["resize"]

    def cache(round_index: int) -> dict[str, Any]:
        tasks = cached_tasks(str(store), source, flip=False)
        return run_mode(evaluate_objects, cached, clock, tasks, args, warm_up=round_index < 0)

    def cache_other_clicker(round_index: int) -> dict[str, Any]:
        tasks = cached_tasks(str(store), source, flip=False)
        evaluate = partial(evaluate_objects, clicker=other_clicker(device))
        return run_mode(evaluate, cached, clock, tasks, args, warm_up=round_index < 0)

    def cache_before(round_index: int) -> dict[str, Any]:
        tasks = cached_tasks(str(store), source, flip=False)
        return run_mode(evaluate_per_object, before, clock, tasks, args, warm_up=round_index < 0)

    def online_mode(round_index: int) -> dict[str, Any]:
        tasks = online_tasks(source, args.size, resize, flip=False)
        return run_mode(evaluate_objects, online, clock, tasks, args, warm_up=round_index < 0)

    return {
        "cache": cache,
        f"cache, {other_clicker(device)} clicker": cache_other_clicker,
        "cache, before": cache_before,
        "online": online_mode,
    }


def other_clicker(device: torch.device) -> str:
    """The clicker `evaluate --clicker auto` does not pick on this device, timed beside the one it picks."""
    return "opencv" if resolved_clicker("auto", device) == "tensor" else "tensor"


def main() -> None:
    args = parse_args()
    device = setup(args)
    store = ensure_store(args, args.split, args.size)
    source = create_dataset(args.dataset, dataset_root(args.dataset, args.root), args.split)
    featurizer = create_featurizer(args.featurizer, weights=args.weights)
    probe = benchmark_probe(args, featurizer, device)
    cv2.setNumThreads(args.opencv_threads)
    timed = modes(args, store, source, probe, featurizer, device)
    for mode in timed.values():
        mode(-1)
    runs = interleave(timed, args.repeats)
    keys = ("s_per_click", "wall_s_per_click", "cpu_ms_per_click_outside_forward", "forward_cpu_ms_per_click")
    summary = {
        name: {
            **{key: median([r[key] for r in values]) for key in keys},
            "read_cpu_ms_per_object": median([r["read_cpu_ms_per_object"] for r in values]),
            "clicks_per_round": values[0]["clicks"],
        }
        for name, values in runs.items()
    }
    same = all(r["curves"] == runs["cache"][0]["curves"] for name in runs if name != "online" for r in runs[name])
    ratio = summary["online"]["s_per_click"] / summary["cache"]["s_per_click"]
    wall_ratio = summary["online"]["wall_s_per_click"] / summary["cache"]["wall_s_per_click"]
    outside = "cpu_ms_per_click_outside_forward"
    outside_ratio = summary["cache"][outside] / summary["cache, before"][outside]
    other = f"cache, {other_clicker(device)} clicker"
    clickers_ratio = summary[other]["wall_s_per_click"] / summary["cache"]["wall_s_per_click"]
    rows = [
        [name, s["s_per_click"], s["wall_s_per_click"], s[outside], s["forward_cpu_ms_per_click"],
         s["read_cpu_ms_per_object"], s["clicks_per_round"]]
        for name, s in summary.items()
    ]  # fmt: skip
    title = (
        f"{args.objects} objects x {args.clicks} clicks ({args.dataset}/{args.split}, {args.size} px, "
        f"probe {probe_name(args)}, {args.featurizer}, {cv2.getNumThreads()} OpenCV threads)"
    )
    headers = ["mode", "s/click", "wall s/click", "CPU ms/click outside forward", "forward CPU ms/click",
               "read CPU ms/object", "clicks/round"]  # fmt: skip
    sections = {
        title: table(headers, rows)
        + f"\nonline / cache s/click: {ratio:.3g}\nonline / cache wall: {wall_ratio:.3g}"
        + f"\ncache / cache, before: CPU outside the forward per click {outside_ratio:.3g}"
        + f"\n{other} / cache (the {resolved_clicker('auto', device)} clicker): wall per click {clickers_ratio:.3g}"
        + f"\nsame clicks and IoUs in every cache mode: {'yes' if same else 'NO'}"
    }
    checks = [
        Check("same clicks and IoUs in every cache mode (1 = yes)", float(same), 1.0),
    ]
    if args.preset == LOW_RES_PRESET:
        checks.insert(0, Check("(b) online / cache s/click", ratio, 10.0))
    if device.type == "cuda":
        checks.insert(0, Check("online / cache wall per click (issue 22: 5 for ViT-L/14 on a GPU)", wall_ratio, 5.0))
    results = {
        "modes": summary,
        "online_over_cache": ratio,
        "online_over_cache_wall": wall_ratio,
        "cpu_ms_per_click_outside_forward": summary["cache"][outside],
        "cpu_ms_per_click_outside_forward_before": summary["cache, before"][outside],
        "outside_forward_today_over_before": outside_ratio,
        "other_clicker_over_cache_wall": clickers_ratio,
        "same_clicks_and_ious": same,
        "opencv_threads": cv2.getNumThreads(),
        "rounds": {
            name: [{k: v for k, v in r.items() if k != "curves"} for r in values] for name, values in runs.items()
        },
    }
    report("eval_per_click", args, sections, checks, results)


if __name__ == "__main__":
    main()

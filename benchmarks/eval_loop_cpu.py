"""CPU time per click outside the probe's forward: this tree's evaluation loop against another tree's, side by side.

Issue 22 asks the evaluation loop's CPU time per click outside the probe forward to fall to at most 30 % of what it
was when the issue was filed (the tree 4f588e3). `eval_per_click.py` compares with `per_object_reference.py`, a copy
of that loop's own steps that still calls today's predictor, framing and metrics: it moves as they get faster, so it
is not the tree it stands for. This script times the trees themselves, each in its own processes, the given tree's
isegprobe on PYTHONPATH or this one's, alternating: a cached store's objects (each tree extracts its own store, kept
in --cache-dir), the same probe weights (the preset trained `--train-steps` steps by this tree), `evaluate_objects`
with its default clicker and OpenCV's default threads, as `isegprobe evaluate` runs. The CPU time outside the
forward is the process's (all threads) less the probe's forward and less reading the objects, per click.

    python benchmarks/eval_loop_cpu.py --baseline-tree /path/to/worktree-of-4f588e3

Both trees must give the same clicks and IoUs: the script checks them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from itertools import islice
from pathlib import Path
from typing import Any

import cv2
from common import REPO, Check, base_parser, dataset_root, ensure_store, median, report, setup, table
from loop_timing import ForwardClock, timed_reads
from safetensors.torch import load_file

import isegprobe
from isegprobe.cache import CachedDataset, FeatureStore
from isegprobe.config_loading import load_train_config
from isegprobe.data import create_dataset
from isegprobe.featurizers import create_featurizer
from isegprobe.inference.evaluation import evaluate_objects
from isegprobe.inference.predictor import Predictor
from isegprobe.inference.tasks import cached_tasks
from isegprobe.model import ISProbe
from isegprobe.training import train

BASELINE_COMMIT = "4f588e3"


def parse_args() -> argparse.Namespace:
    parser = base_parser("eval_loop_cpu", __doc__)
    parser.add_argument("--baseline-tree", type=Path, help="a checkout of the tree to compare with (4f588e3)")
    parser.add_argument("--processes", type=int, default=3, help="processes per tree, alternating")
    parser.add_argument("--split", default="test")
    parser.add_argument("--size", type=int, default=448)
    parser.add_argument("--objects", type=int, default=4, help="objects evaluated per round")
    parser.add_argument("--clicks", type=int, default=5, help="clicks per object")
    parser.add_argument("--batch-size", type=int, default=4, help="objects per probe forward, as evaluate")
    parser.add_argument("--preset", default="quickstart", help="probe preset (quickstart: the low-res probe (b))")
    parser.add_argument("--train-steps", type=int, default=200, help="the preset trained this many steps")
    parser.add_argument(
        "--checkpoint",
        type=Path,
        help="evaluate these weights of the preset's probe instead (a run folder or its .safetensors file), e.g. the "
        "probe trained on builtin for --dataset grabcut, which has no train split",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--probe-weights", help=argparse.SUPPRESS)
    return parser.parse_args()


def trained_probe(args: argparse.Namespace) -> Path:
    """This tree's probe, the preset trained --train-steps steps on the train split's store (once, then kept in
    --cache-dir): both trees evaluate these weights, since how a probe starts has changed since the baseline (the
    head's initialisation, for parity with the research code)."""
    run_dir = args.cache_dir / f"probe-{args.preset}-{args.featurizer}-{args.dataset}-{args.size}-{args.train_steps}"
    if not (run_dir / "last.json").is_file():
        config = load_train_config(args.preset, [f"schedule.max_iters={args.train_steps}"])
        train(config, CachedDataset(ensure_store(args, "train", args.size)), run_dir, device=setup(args))
    return run_dir / "last.safetensors"


def checkpoint_weights(path: Path) -> Path:
    weights = path / "last.safetensors" if path.is_dir() else path
    if not weights.is_file():
        sys.exit(f"--checkpoint {path}: expected a run folder with last.safetensors, or a .safetensors file")
    return weights


def child_rounds(args: argparse.Namespace) -> dict[str, Any]:
    """One process's rounds, timed with the isegprobe found first on the path (the API these calls use is the same
    in every tree since 4f588e3), on its own store, with the weights in --probe-weights."""
    device = setup(args)
    cv2.setNumThreads(-1)
    store = ensure_store(args, args.split, args.size)
    featurizer = create_featurizer(args.featurizer, weights=args.weights)
    probe = ISProbe(load_train_config(args.preset).model, featurizer.dim, featurizer.patch_size)
    probe.load_state_dict(load_file(args.probe_weights))
    preprocessing = FeatureStore.open(store).attrs["preprocessing"]
    predictor = Predictor(probe, preprocessing["mean"], preprocessing["std"], device)
    clock = ForwardClock([probe])
    source = create_dataset(args.dataset, dataset_root(args.dataset, args.root), args.split)
    rounds = []
    for round_index in range(-1, args.repeats):
        objects, clicks = (args.batch_size, 1) if round_index < 0 else (args.objects, args.clicks)
        reading, forward_before = [0.0], clock.seconds
        tasks = timed_reads(islice(cached_tasks(str(store), source, flip=False), objects), reading)
        started = time.process_time()
        run = evaluate_objects(predictor, tasks, clicks, batch_size=args.batch_size)
        cpu, forward = time.process_time() - started, clock.seconds - forward_before
        if round_index >= 0:
            rounds.append(
                {
                    "cpu_ms_per_click_outside_forward": 1000 * (cpu - forward - reading[0]) / run.clicks_made,
                    "forward_cpu_ms_per_click": 1000 * forward / run.clicks_made,
                    "curves": [
                        (curve.id, curve.ious.tolist(), [vars(c) for c in curve.clicks]) for curve in run.results
                    ],
                }
            )
    return {"tree": str(Path(isegprobe.__file__).resolve().parents[1]), "rounds": rounds}


def run_child(tree: Path, cache_dir: Path, probe_weights: Path, args: argparse.Namespace) -> dict[str, Any]:
    """A new process timing `tree`'s loop on its store in `cache_dir`, with the probe's weights from `probe_weights`."""
    forwarded = ["--cache-dir", str(cache_dir), "--probe-weights", str(probe_weights)]
    for name in ("repeats", "threads", "split", "size", "objects", "clicks", "batch_size", "preset", "featurizer",
                 "weights", "dataset", "device"):  # fmt: skip
        forwarded += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    if args.root:
        forwarded += ["--root", args.root]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", *forwarded],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        sys.exit(f"timing the loop of {tree} failed:\n{done.stderr[-4000:]}")
    timed = json.loads(done.stdout.strip().splitlines()[-1])
    if Path(timed["tree"]) != tree.resolve():
        sys.exit(f"PYTHONPATH={tree} imported isegprobe from {timed['tree']}: check how isegprobe is installed")
    return timed


def tree_commit(tree: Path) -> str:
    done = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() or tree.name


def main() -> None:
    args = parse_args()
    if args.child:
        print(json.dumps(child_rounds(args)))
        return
    if args.baseline_tree is None or not (args.baseline_tree / "isegprobe" / "__init__.py").is_file():
        sys.exit(f"--baseline-tree must be a checkout of isegprobe (e.g. a worktree of {BASELINE_COMMIT})")
    trees = {
        f"baseline ({tree_commit(args.baseline_tree)})": (
            args.baseline_tree,
            args.cache_dir / "baseline-trees" / tree_commit(args.baseline_tree),
        ),
        f"this tree ({tree_commit(REPO)})": (REPO, args.cache_dir),
    }
    setup(args)
    probe_weights = trained_probe(args) if args.checkpoint is None else checkpoint_weights(args.checkpoint)
    processes: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    for index in range(args.processes):
        order = list(trees) if index % 2 == 0 else list(reversed(trees))
        for name in order:
            processes[name].append(run_child(*trees[name], probe_weights, args))
    outside, forward = "cpu_ms_per_click_outside_forward", "forward_cpu_ms_per_click"
    summary = {
        name: {
            outside: median([r[outside] for p in runs for r in p["rounds"]]),
            "per_process": [median([r[outside] for r in p["rounds"]]) for p in runs],
            forward: median([r[forward] for p in runs for r in p["rounds"]]),
        }
        for name, runs in processes.items()
    }
    curves = [r["curves"] for runs in processes.values() for p in runs for r in p["rounds"]]
    same = all(c == curves[0] for c in curves)
    baseline_name, this_name = list(trees)
    ratio = summary[this_name][outside] / summary[baseline_name][outside]
    rows = [
        [name, s[outside], ", ".join(f"{v:.3g}" for v in s["per_process"]), s[forward]] for name, s in summary.items()
    ]
    probe = args.checkpoint or f"{args.preset} trained {args.train_steps} steps"
    title = (
        f"{args.objects} objects x {args.clicks} clicks ({args.dataset}/{args.split}, {args.size} px, probe {probe}, "
        f"{args.featurizer}), {args.processes} processes per tree x {args.repeats} rounds"
    )
    headers = ["loop", "CPU ms/click outside forward", "per process (medians)", "forward CPU ms/click"]
    sections = {
        title: table(headers, rows)
        + f"\nthis tree / baseline: CPU outside the forward per click {ratio:.3g}"
        + f"\nsame clicks and IoUs in both trees: {'yes' if same else 'NO'}"
    }
    checks = [
        Check("CPU per click outside the forward, this tree / baseline tree", ratio, 0.30, at_least=False),
        Check("same clicks and IoUs in both trees (1 = yes)", float(same), 1.0),
    ]
    results = {"trees": summary, "this_over_baseline": ratio, "same_clicks_and_ious": same}
    report("eval_loop_cpu", args, sections, checks, results)


if __name__ == "__main__":
    main()

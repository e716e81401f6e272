"""What running on CUDA changes, against the CPU on the same data: the cached features and a probe's NoC.

On CUDA the featurizer runs under bf16 (or fp16) autocast and the probe channels-last under bf16; on the CPU both run
in float32. Features are stored as float16 either way. This script extracts the same split on both devices and
compares the stores entry by entry (largest difference, cosine similarity per token), then trains one probe on the
CUDA store and evaluates it on CUDA from the CUDA store and on the CPU from the CPU store: the NoC and mIoU a
researcher reads should not depend on where they were measured.

    python benchmarks/cuda_agreement.py --device cuda [--size 448] [--steps 100] [--dataset grabcut]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from common import Check, base_parser, extraction_request, report, setup, table

from isegprobe.cache import CachedDataset
from isegprobe.cache.extract import extract
from isegprobe.config_loading import load_train_config
from isegprobe.inference.runner import EvaluationRequest, run_evaluation
from isegprobe.training import train


def parse_args() -> argparse.Namespace:
    parser = base_parser("cuda_agreement", __doc__)
    parser.add_argument("--split", default="test", help="split extracted on both devices and evaluated")
    parser.add_argument("--train-split", default="train", help="split the probe is trained on (CUDA store)")
    parser.add_argument("--size", type=int, default=448)
    parser.add_argument("--steps", type=int, default=100, help="training steps of the quickstart probe on CUDA")
    parser.add_argument("--clicks", type=int, default=20)
    return parser.parse_args()


def feature_agreement(cpu_store: Path, cuda_store: Path) -> dict[str, float]:
    """Entry by entry: the largest absolute difference, its ratio to the features' spread, and the mean and
    smallest cosine similarity of corresponding tokens."""
    cpu = np.asarray(zarr.open_group(str(cpu_store), mode="r")["features"][:], np.float32)
    gpu = np.asarray(zarr.open_group(str(cuda_store), mode="r")["features"][:], np.float32)
    tokens_cpu = np.moveaxis(cpu, 2, -1).reshape(-1, cpu.shape[2])
    tokens_gpu = np.moveaxis(gpu, 2, -1).reshape(-1, gpu.shape[2])
    cosine = (tokens_cpu * tokens_gpu).sum(1) / (
        np.linalg.norm(tokens_cpu, axis=1) * np.linalg.norm(tokens_gpu, axis=1) + 1e-12
    )
    largest = float(np.abs(cpu - gpu).max())
    return {
        "max_abs_diff": largest,
        "max_abs_diff_over_std": largest / float(cpu.std()),
        "mean_cosine": float(cosine.mean()),
        "min_cosine": float(cosine.min()),
    }


def evaluation(checkpoint: Path, store: Path, device: str, out: Path, clicks: int) -> dict[str, Any]:
    request = EvaluationRequest(
        checkpoint=str(checkpoint), out_dir=str(out), stores=[str(store)], max_clicks=clicks, device=device
    )
    (summary,) = run_evaluation(request).values()
    return summary


def main() -> None:
    args = parse_args()
    device = setup(args)
    if device.type != "cuda":
        raise SystemExit("cuda_agreement compares CUDA with the CPU: run it with --device cuda")
    with tempfile.TemporaryDirectory(prefix="cuda_agreement-") as folder:
        compare(args, Path(folder))


def compare(args: argparse.Namespace, work: Path) -> None:
    """Extract on both devices, train on CUDA, evaluate on both; stores and runs go into `work`."""
    stores = {}
    for where in ("cpu", "cuda"):
        args.device = where
        request = extraction_request(args, args.split, args.size, "identity", work / where)
        stores[where] = extract(request).path
    args.device = "cuda"
    train_store = extract(extraction_request(args, args.train_split, args.size, "identity", work / "train")).path
    features = feature_agreement(stores["cpu"], stores["cuda"])

    config = load_train_config("quickstart", [f"schedule.max_iters={args.steps}"])
    train(config, CachedDataset(train_store), work / "run", device="cuda", progress=False)
    summaries = {
        "CUDA (CUDA store)": evaluation(work / "run", stores["cuda"], "cuda", work / "eval_cuda", args.clicks),
        "CPU (CPU store)": evaluation(work / "run", stores["cpu"], "cpu", work / "eval_cpu", args.clicks),
    }
    rows = [
        [name, s["num_instances"], s["NoC@85"], s["NoC@90"], s["mIoU@k"][4], s["mIoU@k"][-1], s["sec_per_click"]]
        for name, s in summaries.items()
    ]
    cuda_miou, cpu_miou = (np.asarray(s["mIoU@k"]) for s in summaries.values())
    results = {
        "features": features,
        "evaluations": summaries,
        "largest_miou_difference": float(np.abs(cuda_miou - cpu_miou).max()),
    }
    sections = {
        f"features of {args.dataset}/{args.split} at {args.size} px, CUDA store against CPU store": table(
            list(features), [list(features.values())]
        ),
        f"quickstart probe trained {args.steps} steps on CUDA, evaluated {args.clicks} clicks per object": table(
            ["evaluated on", "objects", "NoC@85", "NoC@90", "mIoU@5", f"mIoU@{args.clicks}", "s/click"], rows
        ),
    }
    checks = [
        Check("mean token cosine, CUDA vs CPU features", features["mean_cosine"], 0.99),
        Check("largest mIoU difference over the clicks", results["largest_miou_difference"], 0.02, at_least=False),
    ]
    report("cuda_agreement", args, sections, checks, results)


if __name__ == "__main__":
    main()

"""What every benchmark shares: arguments, feature stores, interleaved timing, tables, verdicts and JSON.

Modes are always timed side by side in one run, alternating per round, because on a shared machine absolute times
drift by tens of percent within minutes while the ratio between modes measured together stays put.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shlex
import shutil
import statistics
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import cv2
import torch
from torch.utils.data import Dataset

from isegprobe.cache import CachedDataset
from isegprobe.cache.extract import ExtractionRequest, extract
from isegprobe.data import resolve_root
from isegprobe.featurizers import RandomWeightsWarning

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
SHARED_GRABCUT = REPO.parent / "shared" / "data" / "GrabCut"
DEFAULT_FEATURIZER = "vit_small_patch14_dinov2"

T = TypeVar("T")


def base_parser(name: str, description: str | None) -> argparse.ArgumentParser:
    """Arguments every benchmark takes; `name` sets the default JSON path."""
    parser = argparse.ArgumentParser(
        description=(description or "").strip().splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch/OpenCV threads per process (0: the libraries' default). One thread keeps ratios stable on a "
        "shared machine, where idle OpenMP threads spin against other processes' work.",
    )
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds per mode (medians are reported)")
    parser.add_argument("--featurizer", default=DEFAULT_FEATURIZER, help="timm ViT name")
    parser.add_argument("--weights", default="random", help="featurizer weights: random, hub or a file")
    parser.add_argument("--dataset", default="builtin", help="builtin, or grabcut (../shared/data/GrabCut)")
    parser.add_argument("--root", default=None, help="dataset root (default: the shared GrabCut for grabcut)")
    parser.add_argument("--cache-dir", type=Path, default=RESULTS / "cache", help="feature stores, reused between runs")
    parser.add_argument("--json", type=Path, default=RESULTS / f"{name}.json", help="where to write the results")
    return parser


def setup(args: argparse.Namespace) -> torch.device:
    """Threads, warnings and the device; fails early on a missing GPU."""
    if args.threads > 0:
        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    warnings.filterwarnings("ignore", category=RandomWeightsWarning)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device here")
    return device


def dataset_root(name: str, root: str | None) -> str | None:
    """The shared GrabCut copy is used in place, never copied into the repository."""
    if root is None and name.lower() == "grabcut" and SHARED_GRABCUT.is_dir():
        return str(SHARED_GRABCUT)
    resolved = resolve_root(name, root)
    return str(resolved) if resolved else None


class InMemoryItems(Dataset):
    """The store's entries read once into RAM: the limit a reader can approach."""

    def __init__(self, cached: CachedDataset) -> None:
        self.entries = [cached[index] for index in range(len(cached))]
        self.preprocessing = cached.preprocessing
        self.provenance = cached.provenance

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.entries[index]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def extraction_request(
    args: argparse.Namespace, split: str, size: int, views: str, out: Path, batch_size: int = 8, workers: int = 0
) -> ExtractionRequest:
    return ExtractionRequest(
        featurizer=args.featurizer,
        weights=args.weights,
        dataset=args.dataset,
        root=dataset_root(args.dataset, args.root),
        split=split,
        size=size,
        views=views,
        batch_size=batch_size,
        device=args.device,
        out=str(out),
        workers=workers,
    )


@contextmanager
def into_new_folder(request: ExtractionRequest) -> Iterator[ExtractionRequest]:
    """`request` writing into a new empty folder under its `out`, removed when the block ends. A timed extraction
    then writes its store as a first `extract-features` does: into an existing store's place (`overwrite`), it
    would first remove the last round's store, which took about 1 ms per 448 px view image on two CPU cores (0.13 s
    a round of 64 items) and which no extraction into a new folder pays."""
    Path(request.out).mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="round-", dir=request.out))
    try:
        yield dataclasses.replace(request, out=str(folder), overwrite=False)
    finally:
        shutil.rmtree(folder)


def ensure_store(args: argparse.Namespace, split: str, size: int, views: str = "identity") -> Path:
    """A finished store for (featurizer, dataset, split, size); extraction resumes, so a second run reuses it."""
    request = extraction_request(args, split, size, views, args.cache_dir / f"views-{views.replace(',', '-')}")
    return extract(request).path


def interleave(modes: Mapping[str, Callable[[int], T]], repeats: int) -> dict[str, list[T]]:
    """Call every mode once per round with the round's index, rotating the order so no mode always goes first."""
    names = list(modes)
    results: dict[str, list[T]] = {name: [] for name in names}
    for round_index in range(repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            results[name].append(modes[name](round_index))
    return results


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


@dataclass
class Check:
    """One target of the issue: a measured ratio against its bound."""

    name: str
    value: float
    target: float
    at_least: bool = True

    @property
    def passed(self) -> bool:
        return self.value >= self.target if self.at_least else self.value <= self.target

    def line(self) -> str:
        bound = ">=" if self.at_least else "<="
        return f"{'PASS' if self.passed else 'MISS'}  {self.name}: {self.value:.3g} (target {bound} {self.target:g})"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "target": self.target,
            "at_least": self.at_least,
            "passed": self.passed,
        }


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table, so the printed output can go into the README as it is."""
    cells = [[str(h) for h in headers]] + [[_cell(value) for value in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def machine() -> dict[str, Any]:
    """What the numbers depend on: CPU, cores, threads, load, library versions and the GPU if one is used."""
    info = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": [round(value, 2) for value in os.getloadavg()],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def report(
    name: str, args: argparse.Namespace, sections: Mapping[str, str], checks: Sequence[Check], results: dict[str, Any]
) -> None:
    """Print the tables and verdicts, then write everything (with the exact command and machine) as JSON."""
    command = "python " + " ".join(shlex.quote(part) for part in [_relative(sys.argv[0]), *sys.argv[1:]])
    info = machine()
    print(f"## {name}")
    print(f"command: {command}")
    print(
        f"machine: {info['cpu']}, {info['cores']} cores, {info['torch_threads']} torch threads, "
        f"load {info['load_average']}, torch {info['torch']}" + (f", {info['gpu']}" if "gpu" in info else "")
    )
    for title, text in sections.items():
        print(f"\n{title}\n{text}")
    if checks:
        print("\ntargets")
        for check in checks:
            print(check.line())
    payload = {
        "benchmark": name,
        "command": command,
        "machine": info,
        "args": {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()},
        "results": results,
        "checks": [check.as_dict() for check in checks],
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(payload, indent=2))
    print(f"\nwrote {args.json}")


def _relative(path: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return path

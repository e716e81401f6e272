"""Can stage one keep its featurizer busy? Extraction with the featurizer's work taken out vs its bare forward.

On a CPU the featurizer is the whole cost and `extract_overhead.py` says what extraction adds to it. On a fast GPU
the featurizer forward is cheap and what surrounds it (decoding JPEGs, views, the hand-over from the loader workers,
compression and shard writes) decides the speed. This script runs the library's real `extract` over a folder of
generated 640x480 JPEGs with a stand-in featurizer that returns features the real one computed beforehand, so the
extraction costs everything but the featurizer; beside it, the real featurizer's bare forward on images of that size
(all of them, or as many batches as fit in a few seconds). The ratio of their images/s says whether the pipeline
can feed the featurizer (>= 1) or holds it back (< 1). It also prints how much CPU the threads of the main process and
of the loader workers spent per item: a thread near the run's time per item is where the pipeline stops scaling with
cores. The busiest single thread (`serial_ms_per_image`) and all processes together (`cpu_ms_per_image`), per view
image, medians over the pipeline rounds, are its targets: at most 1 and 8 ms, so that 16 cores can feed about 2000
images/s. On a CPU the extraction's device is the CPU, so those figures include the device's work (normalizing the
images, the views' flips and turns, the cast to float16), which a GPU takes off the host; `host_serial_ms_per_image` and
`host_cpu_ms_per_image` are the same figures without it: the loop thread's CPU time in its featurizer stage and torch's
own threads. The busiest thread is often a loader worker's, whose load divides among the workers; the main process's
busiest thread (`host_main_process_serial_ms_per_image`) is the one that more cores do not relieve.

With `--with-featurizer` (the default on CUDA) it also times the real extraction, featurizer included, against the
bare forward: the figure a researcher waits for. Its target (`--featurizer-target`) is 0.5 for ViT-S/14 and 0.9 for
ViT-L/14 at 448 px on a GPU, where a larger model leaves the pipeline more time per image to hide in.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from common import Check, base_parser, interleave, into_new_folder, median, report, setup, synchronize, table
from extract_overhead import bare_forward

from isegprobe.cache.extract import ExtractionRequest, extract
from isegprobe.cache.extract_loop import LoopTimes
from isegprobe.data.builtin import render_scene
from isegprobe.data.preprocess import normalize_images
from isegprobe.devices import featurizer_autocast
from isegprobe.featurizers import Featurizer, create_featurizer
from isegprobe.loader_workers import default_loader_workers

IMAGE_SIZE = (480, 640)  # height, width of the generated JPEGs: a typical benchmark photo
FORWARD_SECONDS = 5.0
PIPELINE, FORWARD = "pipeline, featurizer stand-in", "bare featurizer forward"
EXTRACTION = "extract-features, real featurizer"


class PrecomputedFeatures(Featurizer):
    """The real featurizer's identity and output shape; its forward hands back features computed once, on the
    device, so that extraction runs every step but the featurizer's arithmetic."""

    def __init__(self, real: Featurizer, features: torch.Tensor) -> None:
        super().__init__(real.name, real.patch_size, real.dim, real.embed_dim, real.mean, real.std, real.provenance)
        self.register_buffer("features", features)

    def forward(self, images: torch.Tensor, token_bias: torch.Tensor | None = None) -> torch.Tensor:
        return self.features[: len(images)]


def write_scenes(root: Path, count: int) -> None:
    """`count` built-in scenes enlarged to 640x480, as a `custom` dataset: images/NAME.jpg and a mask per object."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    height, width = IMAGE_SIZE
    for index in range(count):
        image, labels = render_scene(10_000 + index)
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
        labels = cv2.resize(labels, (width, height), interpolation=cv2.INTER_NEAREST)
        name = f"scene{index:05d}"
        cv2.imwrite(str(root / "images" / f"{name}.jpg"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        for instance in range(1, int(labels.max()) + 1):
            suffix = "" if instance == 1 else f"_{instance}"
            cv2.imwrite(str(root / "masks" / f"{name}{suffix}.png"), (labels == instance).astype(np.uint8) * 255)


@torch.inference_mode()
def precomputed_features(featurizer: Featurizer, args: argparse.Namespace, device: torch.device) -> torch.Tensor:
    """Real features of generated scenes, one batch: compressed like the real ones when they are written."""
    scenes = [render_scene(20_000 + index)[0] for index in range(args.batch_size)]
    images = np.stack([cv2.resize(scene, (args.size, args.size)) for scene in scenes])
    batch = torch.from_numpy(images).to(device).permute(0, 3, 1, 2)
    with featurizer_autocast(device):
        return featurizer(normalize_images(batch, featurizer.mean, featurizer.std)).float()


class ThreadClock:
    """CPU seconds per thread of this process and of its child processes (the loader workers) while it runs, read
    from /proc (Linux). Threads and processes that end during the run (the shard writers, the workers) are read every
    50 ms, so their time is counted up to their last reading; `total` is exact, from getrusage of this process and
    its reaped children, less this clock's own thread."""

    def __init__(self) -> None:
        self._seen: dict[tuple[int, int], tuple[str, float]] = {}
        self._start: dict[tuple[int, int], float] = {}
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="thread-clock", daemon=True)
        self.total = 0.0

    def __enter__(self) -> ThreadClock:
        self._read()
        self._start = {key: cpu for key, (_, cpu) in self._seen.items()}
        self._usage = _process_tree_cpu()
        self._poller.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._poller.join()
        self._read()
        self.total = _process_tree_cpu() - self._usage - self._spent().get("thread-clock", 0.0)

    def by_role(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for name, cpu in self._spent().items():
            if name != "thread-clock":
                role = _role(name)
                totals[role] = totals.get(role, 0.0) + cpu
        return totals

    def busiest(self) -> tuple[str, float]:
        """The thread, of any of the processes, that spent the most CPU time, and that time."""
        cpu, name = max((cpu, name) for name, cpu in self.threads())
        return name, cpu

    def threads(self) -> list[tuple[str, float]]:
        """(name, CPU seconds) of every thread of every process but this clock's."""
        return [(name, cpu) for name, cpu in self._by_thread() if name != "thread-clock"]

    def _by_thread(self) -> list[tuple[str, float]]:
        """(name, CPU seconds spent while the clock ran) of every thread seen."""
        return [(name, cpu - self._start.get(key, 0.0)) for key, (name, cpu) in self._seen.items()]

    def _spent(self) -> dict[str, float]:
        spent: dict[str, float] = {}
        for name, cpu in self._by_thread():
            spent[name] = spent.get(name, 0.0) + cpu
        return spent

    def _poll(self) -> None:
        while not self._stop.wait(0.05):
            self._read()

    def _read(self) -> None:
        names = {thread.native_id: thread.name for thread in threading.enumerate()}
        own = os.getpid()
        for pid in (own, *_child_processes(own)):
            for tid, cpu in _thread_cpu(pid).items():
                if pid != own:
                    name = f"worker process {pid}, thread {tid}"
                else:
                    name = names.get(tid) or _native_name(pid, tid)
                self._seen[pid, tid] = (name, cpu)


def _native_name(pid: int, tid: int) -> str:
    """A thread that Python did not start: tensorstore's (which names its own), or another (torch's OpenMP threads,
    CUDA's)."""
    try:
        comm = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
    except OSError:
        comm = ""
    return f"tensorstore thread {tid}" if comm.startswith("ts_") else f"thread {tid}"


def _thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of each thread of process `pid` (none if it has ended)."""
    ticks = os.sysconf("SC_CLK_TCK")
    seconds = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return seconds
    for tid in tids:
        try:
            fields = _stat_fields(Path(f"/proc/{pid}/task/{tid}/stat"))
        except OSError:  # the thread ended between the listing and the read
            continue
        seconds[int(tid)] = (int(fields[11]) + int(fields[12])) / ticks
    return seconds


def _child_processes(pid: int) -> list[int]:
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent = int(_stat_fields(Path(f"/proc/{entry}/stat"))[1])
            except (OSError, IndexError, ValueError):
                continue
            if parent == pid:
                children.append(int(entry))
    return children


def _stat_fields(path: Path) -> list[str]:
    """The fields of a /proc stat file after the command name, which may itself hold spaces and parentheses."""
    return path.read_text().rsplit(")", 1)[1].split()


def _process_tree_cpu() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


OTHER_NATIVE_THREADS = "threads outside Python (OpenMP, CUDA, ...)"
LOADER_WORKERS = "loader worker processes"


def _role(name: str) -> str:
    """zarr's event loop, zarr's codec threads, our shard writers, the main thread, tensorstore's threads, other
    native threads; any other Python thread by its name."""
    if name.startswith("asyncio_"):
        return "zarr codec threads"
    if name.startswith("shard-writer"):
        return "shard writers"
    if name.startswith("tensorstore thread"):
        return "tensorstore threads"
    if name.startswith("thread "):
        return OTHER_NATIVE_THREADS
    if name.startswith("worker process"):
        return LOADER_WORKERS
    return {"zarr_io": "zarr event loop", "MainThread": "main thread"}.get(name, name)


def host_figures(clock: ThreadClock, loop: LoopTimes, count: int) -> dict[str, Any]:
    """On a CPU run, the busiest thread and all processes per view image without the device's work: the loop
    thread's CPU time in its featurizer stage, and torch's own threads (the other native threads of the main
    process; tensorstore's are told apart by name). Also the busiest thread of the main process alone: a loader
    worker's load divides among the workers, its threads' does not, so that is what caps the pipeline whatever the
    number of cores."""
    in_featurizer = loop.thread_cpu.get("featurizer", 0.0)
    device, host = in_featurizer, []
    for name, cpu in clock.threads():
        if _role(name) == OTHER_NATIVE_THREADS:
            device += cpu
        else:
            host.append((cpu - in_featurizer if name == "MainThread" else cpu, name))
    busiest_cpu, busiest = max(host)
    main_cpu, main_busiest = max((cpu, name) for cpu, name in host if _role(name) != LOADER_WORKERS)
    return {
        "host_serial_ms_per_image": 1000 * busiest_cpu / count,
        "host_cpu_ms_per_image": 1000 * (clock.total - device) / count,
        "host_busiest_thread": busiest,
        "host_main_process_serial_ms_per_image": 1000 * main_cpu / count,
        "host_main_process_busiest_thread": main_busiest,
        "device_work_ms_per_image": 1000 * device / count,
    }


def round_figures(clock: ThreadClock, loop: LoopTimes, count: int, on_cpu: bool) -> dict[str, Any]:
    """One pipeline round's figures per view image: the busiest thread and all processes, and on a CPU run the same
    without the device's work (`host_figures`)."""
    busiest, busiest_cpu = clock.busiest()
    figures = {
        "serial_ms_per_image": 1000 * busiest_cpu / count,
        "cpu_ms_per_image": 1000 * clock.total / count,
        "busiest_thread": busiest,
    }
    return figures | host_figures(clock, loop, count) if on_cpu else figures


def median_figures(each_round: list[dict[str, Any]]) -> dict[str, Any]:
    """Every figure's median over the rounds (a shared machine's noise moves single rounds by half a millisecond
    per view image); the threads' names are the last round's."""
    return {
        name: median([figures[name] for figures in each_round]) if isinstance(value, float) else value
        for name, value in each_round[-1].items()
    }


def forward_rate(featurizer: Featurizer, images: np.ndarray, batch_size: int, device: torch.device) -> float:
    """Images/s of the bare forward, over the images or as many batches as fit in FORWARD_SECONDS: on a CPU the
    featurizer takes minutes over what the pipeline does in seconds, and its rate is steady after a few batches."""
    done, seconds = 0, 0.0
    for start in range(0, len(images), batch_size):
        seconds += bare_forward(featurizer, images[start : start + batch_size], batch_size, device)
        done += len(images[start : start + batch_size])
        if seconds >= FORWARD_SECONDS:
            break
    return done / seconds


def timed_pipeline(
    request: ExtractionRequest,
    stand_in: Featurizer,
    device: torch.device,
    rounds: list[tuple[LoopTimes, ThreadClock | None]],
) -> float:
    """Seconds for one extraction into a new store; where its loop's time went, and its threads' CPU time where
    Linux tells, are added to `rounds`."""
    clock = ThreadClock() if Path("/proc/self/task").is_dir() else None
    with into_new_folder(request) as fresh:
        started = time.perf_counter()
        if clock is None:
            result = extract(fresh, featurizer=stand_in)
        else:
            with clock:
                result = extract(fresh, featurizer=stand_in)
        synchronize(device)
        seconds = time.perf_counter() - started
    rounds.append((result.loop, clock))
    return seconds


def timed_extraction(request: ExtractionRequest, featurizer: Featurizer, device: torch.device) -> float:
    """Seconds for one extraction into a new store with the real featurizer, already built and on the device."""
    with into_new_folder(request) as fresh:
        started = time.perf_counter()
        extract(fresh, featurizer=featurizer)
        synchronize(device)
        return time.perf_counter() - started


def parse_args() -> argparse.Namespace:
    parser = base_parser("extract_pipeline", __doc__)
    parser.set_defaults(repeats=2, threads=0)
    parser.add_argument("--images", type=int, default=256, help="generated 640x480 JPEGs to extract")
    parser.add_argument("--size", type=int, default=448)
    parser.add_argument("--views", default="identity,hflip", help="views per item, as extract-features --views")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward, as extract-features")
    parser.add_argument(
        "--extract-workers", type=int, default=default_loader_workers(), help="loader workers (the CLI's default)"
    )
    parser.add_argument("--codec", default="zstd", help="store compression, as extract-features --codec")
    parser.add_argument(
        "--with-featurizer",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also time extract-features with the real featurizer (default: on CUDA only; minutes a round on a CPU)",
    )
    parser.add_argument(
        "--featurizer-target",
        type=float,
        default=0.5,
        help="least extract-features / bare forward (images/s) with the real featurizer: 0.5 for ViT-S/14, 0.9 for "
        "ViT-L/14",
    )
    args = parser.parse_args()
    if args.with_featurizer is None:
        args.with_featurizer = args.device.startswith("cuda")
    return args


def main() -> None:
    args = parse_args()
    device = setup(args)
    featurizer = create_featurizer(args.featurizer, weights=args.weights).to(device)
    stand_in = PrecomputedFeatures(featurizer, precomputed_features(featurizer, args, device)).to(device)
    views = len(args.views.split(","))
    count = args.images * views
    rounds: list[tuple[LoopTimes, ThreadClock | None]] = []
    with tempfile.TemporaryDirectory(prefix="isegprobe-pipeline-") as scratch:
        root = Path(scratch) / "scenes"
        write_scenes(root, args.images)
        request = ExtractionRequest(
            featurizer=args.featurizer,
            weights=args.weights,
            dataset="custom",
            root=str(root),
            split="test",
            size=args.size,
            views=args.views,
            batch_size=args.batch_size,
            device=args.device,
            out=str(Path(scratch) / "stores"),
            workers=args.extract_workers,
            codec=args.codec,
        )
        images = np.random.default_rng(0).integers(0, 256, (count, args.size, args.size, 3), dtype=np.uint8)
        bare_forward(featurizer, images[: args.batch_size], args.batch_size, device)
        modes: dict[str, Callable[[int], float]] = {
            PIPELINE: lambda _round: count / timed_pipeline(request, stand_in, device, rounds),
            FORWARD: lambda _round: forward_rate(featurizer, images, args.batch_size, device),
        }
        if args.with_featurizer:
            modes[EXTRACTION] = lambda _round: count / timed_extraction(request, featurizer, device)
        per_round = interleave(modes, args.repeats)
    rates = {name: median(values) for name, values in per_round.items()}
    ratio = rates[PIPELINE] / rates[FORWARD]
    rows = [[name, rates[name], rates[name] / views] for name in rates]
    extraction_ratio = rates[EXTRACTION] / rates[FORWARD] if EXTRACTION in rates else None
    extraction_line = (
        "" if extraction_ratio is None else f"\nextract-features / bare forward (images/s): {extraction_ratio:.3g}"
    )
    sections = {
        f"{args.images} generated 640x480 JPEGs x views {args.views} = {count} images at {args.size} px, batch "
        f"{args.batch_size}, {args.extract_workers} loader workers, codec {args.codec}, {args.featurizer} on "
        f"{args.device}": table(["mode", "images/s", "items/s"], rows)
        + f"\npipeline / bare forward (images/s): {ratio:.3g}"
        + extraction_line
        + f"\nextraction loop, last pipeline round: {rounds[-1][0].summary()}"
    }
    thread_ms, per_image, checks = {}, {}, [Check("pipeline / bare forward", ratio, 1.0)]
    if extraction_ratio is not None:
        checks.append(Check("extract-features / bare forward", extraction_ratio, args.featurizer_target))
    clock = rounds[-1][1]
    if clock is not None:
        thread_ms = {role: 1000 * cpu / args.images for role, cpu in clock.by_role().items() if cpu > 0}
        run_ms = 1000 * views / per_round[PIPELINE][-1]
        thread_rows = [[role, value] for role, value in sorted(thread_ms.items(), key=lambda pair: -pair[1])]
        each_round = [
            round_figures(round_clock, loop, count, args.device == "cpu")
            for loop, round_clock in rounds
            if round_clock is not None
        ]
        per_image = median_figures(each_round) | {"each_round": each_round}
        lines = (
            f"\nmedians of {len(each_round)} pipeline rounds (threads named from the last):"
            f"\nbusiest single thread ({per_image['busiest_thread']}): {per_image['serial_ms_per_image']:.3g} ms per "
            f"view image\nall processes: {per_image['cpu_ms_per_image']:.3g} CPU ms per view image"
        )
        if args.device == "cpu":
            lines += (
                f"\nthe device's work (the loop's featurizer stage, torch's threads): "
                f"{per_image['device_work_ms_per_image']:.3g} CPU ms per view image; without it, the busiest thread "
                f"({per_image['host_busiest_thread']}) {per_image['host_serial_ms_per_image']:.3g} and all processes "
                f"{per_image['host_cpu_ms_per_image']:.3g} ms per view image; the main process's busiest thread "
                f"({per_image['host_main_process_busiest_thread']}) "
                f"{per_image['host_main_process_serial_ms_per_image']:.3g}"
            )
        sections[f"CPU ms per item by thread, last pipeline round ({run_ms:.3g} ms per item)"] = (
            table(["thread", "CPU ms per item"], thread_rows) + lines
        )
        checks += [
            Check("busiest thread, CPU ms per view image", per_image["serial_ms_per_image"], 1.0, at_least=False),
            Check("all processes, CPU ms per view image", per_image["cpu_ms_per_image"], 8.0, at_least=False),
        ]
        if args.device == "cpu":
            host_only = "without the device's work (a GPU's on a GPU machine)"
            checks += [
                Check(
                    f"{host_only}: the main process's busiest thread, CPU ms per view image",
                    per_image["host_main_process_serial_ms_per_image"],
                    1.0,
                    at_least=False,
                ),
                Check(
                    f"{host_only}: all processes, CPU ms per view image",
                    per_image["host_cpu_ms_per_image"],
                    8.0,
                    at_least=False,
                ),
            ]
    results = {
        "images": count,
        "images_per_second": per_round,
        "median_images_per_second": rates,
        "ratio": ratio,
        "extraction_ratio": extraction_ratio,
        "thread_cpu_ms_per_item": thread_ms,
        **per_image,
        "loop_seconds": dataclasses.asdict(rounds[-1][0]),
    }
    report("extract_pipeline", args, sections, checks, results)


if __name__ == "__main__":
    main()

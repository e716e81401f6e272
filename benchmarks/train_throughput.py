"""Stage-two training speed from the cache, online (featurizer in the loop) and from features in memory.

The cache exists so that a probe trains without the frozen featurizer: cache / online says what that buys, and
cache / in-memory what reading the store costs against the limit (in-memory is the store preloaded, as `data.preload`
trains: in host memory, or on a GPU that draws the clicks, in its memory). All three modes run the same real training
step (`Trainer.train_step`) on the same batches through the same loader and click sampler; they differ only in where
the features come from. Hooks on the real modules split each step into data, featurizer, click encoder, upsampler,
head forward, backward, optimizer and the rest, so nothing of the step is re-implemented here. Where the targets and
initial clicks are drawn on the device (`data.click_sampling`, on a GPU by default), a fourth mode times the cache
with them drawn per image in the loader, as before, beside it.

Probe (a) is iSegProbe's recipe (`sbd_224`: bilinear upsampling, then two 3x3 C -> C convs at full resolution); it
runs at --size-a, 224 px by default, because one such step at 448 px takes minutes on a CPU. Probe (b) is the
low-resolution probe (`quickstart`: identity upsampler, head width 64 on the feature grid) at --size.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
import traceback
from collections import Counter, defaultdict
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from common import (
    Check,
    base_parser,
    ensure_store,
    interleave,
    median,
    report,
    setup,
    synchronize,
    table,
)
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.data import DataLoader, Dataset

from isegprobe.cache import CachedDataset
from isegprobe.config import TrainConfig
from isegprobe.config_loading import load_train_config
from isegprobe.featurizers import Featurizer, create_featurizer
from isegprobe.model import ISProbe
from isegprobe.training.click_dataset import EpochShuffleSampler
from isegprobe.training.loaders import draws_on_device, preload_device, training_loader
from isegprobe.training.run_setup import probe_dims
from isegprobe.training.trainer import StepRequest, Trainer, train_steps_together

LOADER_CLICKS = "cache, clicks drawn in the loader"
PHASES = ("data", "featurizer", "click encoder", "upsampler", "head fwd", "loss", "backward", "optimizer", "other")


@dataclass(frozen=True)
class ProbeRun:
    key: str
    description: str
    preset: str
    size: int
    batch_size: int
    steps: int
    repeats: int


class PhaseTimer:
    """Wall time per phase of the real `train_step`, taken by hooks on the modules and the optimizer it calls.

    Backward is the time from the end of the loss's forward to the optimizer step (zero_grad included); forward
    times include the no-grad passes of the simulated clicks. On CUDA every hook synchronizes, which keeps the host
    from running ahead of the device: `untimed` turns the hooks off, for steps timed as training runs them.
    """

    def __init__(self, trainer: Trainer, device: torch.device) -> None:
        self.device = device
        self.untimed = False
        self.seconds: dict[str, float] = defaultdict(float)
        self._started: dict[str, float] = {}
        self._loss_done = 0.0
        head = trainer.probe.head
        watched: dict[str, list[nn.Module]] = {
            "featurizer": [trainer.featurizer] if trainer.online else [],
            "click encoder": [trainer.probe.click_encoder],
            "upsampler": [trainer.probe.upsampler],
            "head fwd": [head.reduce, head.body, head.logit],
        }
        for phase, modules in watched.items():
            for module in modules:
                module.register_forward_pre_hook(partial(self._start, phase))
                module.register_forward_hook(partial(self._stop, phase))
        trainer.loss_fn.register_forward_pre_hook(partial(self._start, "loss"))
        trainer.loss_fn.register_forward_hook(self._after_loss)
        trainer.optimizer.register_step_pre_hook(self._before_optimizer)
        trainer.optimizer.register_step_post_hook(self._after_optimizer)

    def _now(self) -> float:
        synchronize(self.device)
        return time.perf_counter()

    def _start(self, phase: str, *_: Any) -> None:
        if not self.untimed:
            self._started[phase] = self._now()

    def _stop(self, phase: str, *_: Any) -> None:
        if not self.untimed:
            self.seconds[phase] += self._now() - self._started.pop(phase)

    def _after_loss(self, *_: Any) -> None:
        self._stop("loss")
        self._loss_done = time.perf_counter()

    def _before_optimizer(self, *_: Any) -> None:
        if not self.untimed:
            self._started["optimizer"] = self._now()
            self.seconds["backward"] += self._started["optimizer"] - self._loss_done

    def _after_optimizer(self, *_: Any) -> None:
        self._stop("optimizer")

    def take(self) -> dict[str, float]:
        taken = dict(self.seconds)
        self.seconds.clear()
        return taken


@dataclass
class Mode:
    trainer: Trainer
    loader: DataLoader
    order: EpochShuffleSampler
    timer: PhaseTimer


def build_mode(
    config: TrainConfig,
    items: Dataset,
    dims: dict[str, int],
    device: torch.device,
    featurizer: Featurizer | None,
) -> Mode:
    """A fresh probe (same seed in every mode) and the loader a training run builds (`training_loader`)."""
    torch.manual_seed(config.seed)
    probe = ISProbe(config.model, **dims)
    online = featurizer is not None
    trainer = Trainer(config, probe, items.preprocessing, device, featurizer, online=online)
    loader = training_loader(items, config, device, online)
    return Mode(trainer, loader, loader.sampler, PhaseTimer(trainer, device))


def run_round(mode: Mode, steps: int, lr: float, device: torch.device) -> dict[str, float]:
    """`steps` training steps on the epoch's first batches (the same in every round and mode): seconds per phase."""
    mode.order.start(0)
    batches = iter(mode.loader)
    data = total = 0.0
    mode.timer.take()
    for step in range(steps):
        started = time.perf_counter()
        batch = next(batches)
        loaded = time.perf_counter()
        mode.trainer.train_step(batch, step, lr)
        synchronize(device)
        data += loaded - started
        total += time.perf_counter() - started
    phases = {phase: 0.0 for phase in PHASES} | mode.timer.take() | {"data": data}
    phases["other"] = total - sum(value for phase, value in phases.items() if phase != "other")
    return {"seconds": total, **phases}


def measure_probe(
    args: argparse.Namespace, run: ProbeRun, featurizer: Featurizer, device: torch.device
) -> dict[str, Any]:
    """Interleaved rounds of the modes for one probe; per-mode medians of it/s and of each phase per step."""
    store = ensure_store(args, args.split, run.size)
    cached = CachedDataset(store, items=CachedDataset(store).items[: args.items])
    if run.steps * run.batch_size > len(cached):
        raise SystemExit(
            f"probe ({run.key}): {run.steps} steps of batch {run.batch_size} need {run.steps * run.batch_size} "
            f"entries, but the store gives {len(cached)} (--items {args.items}); every round times one epoch's first "
            "batches, so lower --steps or the batch size, or raise --items"
        )
    config = train_config(args, run)
    in_memory = CachedDataset(store, items=cached.items)
    in_memory.preload(preload_device(config, device))  # data.preload: on a GPU that draws the clicks, kept there
    dims = probe_dims(cached, None, run.size)
    modes = {
        "cache": build_mode(config, cached, dims, device, None),
        "in-memory": build_mode(config, in_memory, dims, device, None),
        "online": build_mode(config, in_memory, dims, device, featurizer),
    }
    if draws_on_device(config, device):  # today's path beside it: each image's clicks drawn in the loader
        modes[LOADER_CLICKS] = build_mode(train_config(args, run, "loader"), cached, dims, device, None)
    lr = config.optim.lr
    for mode in modes.values():
        run_round(mode, 1, lr, device)
    rounds = interleave(
        {name: partial(timed_round, mode, run.steps, lr, device) for name, mode in modes.items()}, run.repeats
    )
    untimed = interleave(
        {name: partial(untimed_round, mode, run.steps, lr, device) for name, mode in modes.items()}, run.repeats
    )
    measured = {
        "store": str(store),
        "run": run.__dict__,
        "modes": {name: _summarize(values, run.steps) for name, values in rounds.items()},
        "untimed_ms_per_step": {name: 1000 * median(values) / run.steps for name, values in untimed.items()},
    }
    if args.profile:
        measured["profile"] = _profile(modes["cache"], lr, run.steps, device)
    return measured


def train_config(args: argparse.Namespace, run: ProbeRun, click_sampling: str | None = None) -> TrainConfig:
    """The probe's preset at the run's batch size, with the loader workers and click sampling asked for."""
    overrides = [f"data.batch_size={run.batch_size}", f"data.num_workers={args.workers}"]
    return load_train_config(run.preset, [*overrides, f"data.click_sampling={click_sampling or args.click_sampling}"])


def side_by_side_round(
    modes: list[Mode], steps: int, lr: float, device: torch.device, in_turn: bool = False
) -> dict[str, float]:
    """`steps` steps of every probe in `modes` on batches read once, from the first one's loader, as `isegprobe
    train --variant ...` runs them (`train_steps_together`: each round of iterative clicks made for all of them at
    once), or with `in_turn` each probe's whole step after the other's, as before: seconds in all, reading the
    data, and the probes' phases summed."""
    lead = modes[0]
    lead.order.start(0)
    batches = iter(lead.loader)
    for mode in modes:
        mode.timer.take()
    data = total = 0.0
    for step in range(steps):
        started = time.perf_counter()
        batch = next(batches)
        loaded = time.perf_counter()
        prepared = modes[0].trainer.to_device(batch)  # the probes share their inputs, as side by side in a run
        if in_turn:
            for mode in modes:
                mode.trainer.train_step(batch, step, lr, prepared)
        else:
            train_steps_together([StepRequest(mode.trainer, batch, step, lr, prepared) for mode in modes])
        synchronize(device)
        data += loaded - started
        total += time.perf_counter() - started
    arithmetic = sum(sum(mode.timer.take().values()) for mode in modes)
    return {"seconds": total, "data": data, "host": total - arithmetic}


IN_TURN = "side by side, each probe's step in turn (before)"


def measure_side_by_side(args: argparse.Namespace, run: ProbeRun, count: int, device: torch.device) -> dict[str, Any]:
    """One probe alone against `count` probes side by side, interleaved, from the cache: host ms per step (data and
    everything outside the modules', loss's and optimizer's arithmetic) of each; and the same probes stepped one
    after the other, as side by side training did before its rounds of clicks were made together."""
    store = ensure_store(args, args.split, run.size)
    cached = CachedDataset(store, items=CachedDataset(store).items[: args.items])
    config = train_config(args, run)
    dims = probe_dims(cached, None, run.size)
    groups = {
        "one probe": [build_mode(config, cached, dims, device, None)],
        f"{count} probes side by side": [build_mode(config, cached, dims, device, None) for _ in range(count)],
    }
    groups[f"{count} probes {IN_TURN}"] = groups[f"{count} probes side by side"]
    lr = config.optim.lr
    for modes in groups.values():
        side_by_side_round(modes, 1, lr, device)
    rounds = interleave(
        {
            name: partial(_side_by_side_timed, modes, run.steps, lr, device, name.endswith(IN_TURN))
            for name, modes in groups.items()
        },
        run.repeats,
    )
    return {
        name: {key: 1000 * median([r[key] for r in values]) / run.steps for key in ("seconds", "data", "host")}
        for name, values in rounds.items()
    }


def _side_by_side_timed(
    modes: list[Mode], steps: int, lr: float, device: torch.device, in_turn: bool, round_index: int
) -> dict[str, float]:
    return side_by_side_round(modes, steps, lr, device, in_turn)


def timed_round(mode: Mode, steps: int, lr: float, device: torch.device, round_index: int) -> dict[str, float]:
    """`run_round` as `interleave` calls it (every round runs the same steps, so the index is unused)."""
    return run_round(mode, steps, lr, device)


def untimed_round(mode: Mode, steps: int, lr: float, device: torch.device, round_index: int) -> float:
    """Seconds for the same steps with the phase hooks off: no synchronization inside a step, as in training."""
    mode.timer.untimed = True
    try:
        return run_round(mode, steps, lr, device)["seconds"]
    finally:
        mode.timer.untimed = False


def _summarize(rounds: list[dict[str, float]], steps: int) -> dict[str, Any]:
    per_step = {phase: median([r[phase] for r in rounds]) / steps for phase in PHASES}
    return {
        "it_per_s": median([steps / r["seconds"] for r in rounds]),
        "s_per_step": median([r["seconds"] for r in rounds]) / steps,
        "phase_s_per_step": per_step,
        "rounds": rounds,
    }


# Where a cache step's host time goes, by cProfile: (label, file, function) of the library's functions that do it.
HOST_WORK = (
    ("reading and the click sampler (loader)", "click_dataset.py", "__getitem__"),
    ("  of which the click sampler", "points_sampler.py", "sample"),
    ("iterative clicks (error maps, transforms, draws)", "next_clicks.py", "next_clicks_together"),
    ("click maps", "clicks.py", "click_inputs"),
    ("logits resized to full size", "layers.py", "resize_to"),
    ("logged BCE", "losses.py", "masked_bce"),
    ("logged IoU", "trainer.py", "batch_iou"),
)


class OperatorCensus(TorchDispatchMode):
    """The operators a step dispatches, counted by the line of the library (or of torch.optim) that called them; a
    backward's count under the line that called it. Views are counted too; the rest each launch a kernel on a GPU,
    where every launch costs the host a few microseconds, whatever its size."""

    def __init__(self) -> None:
        super().__init__()
        self.by_line: Counter[str] = Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        self.by_line[_calling_line()] += 1
        return func(*args, **(kwargs or {}))


def _calling_line() -> str:
    for frame in reversed(traceback.extract_stack()):
        if "/isegprobe/" in frame.filename or "/torch/optim/" in frame.filename:
            return f"{Path(frame.filename).name}:{frame.lineno} {(frame.line or '').strip()}"
    return "elsewhere"


def _census(mode: Mode, lr: float, steps: int) -> str:
    """Operators per step of the epoch's first `steps` batches, the lines that call the most first."""
    mode.order.start(0)
    batches = iter(mode.loader)
    census, rounds = OperatorCensus(), 0
    for step in range(steps):
        batch = next(batches)
        with census:
            rounds += mode.trainer.train_step(batch, step, lr).num_next_clicks
    rows = [[line[:100], count / steps] for line, count in census.by_line.most_common(12)]
    total = sum(census.by_line.values()) / steps
    return (
        table(["calling line", "operators per step"], rows)
        + f"\noperators per step in all: {total:.0f} ({rounds} next-click rounds in {steps} steps)"
    )


def _profile(mode: Mode, lr: float, steps: int, device: torch.device) -> str:
    """torch.profiler's top operators over one cache-mode step: what the step's time is made of; the operators a
    step dispatches, by calling line; and cProfile's time per step in the library's functions that make up its host
    time (cProfile's own cost included)."""
    mode.order.start(0)
    batch = next(iter(mode.loader))
    started = time.perf_counter()
    with torch.profiler.profile() as profiler:
        mode.trainer.train_step(batch, 0, lr)
        synchronize(device)
    wall = time.perf_counter() - started
    averages = profiler.key_averages()
    operators = averages.table(sort_by="self_cpu_time_total", row_limit=12)
    if device.type == "cuda":
        busy = sum(event.self_device_time_total for event in averages) / 1000
        operators += (
            "\n"
            + averages.table(sort_by="self_device_time_total", row_limit=12)
            + f"\nthe device busy {busy:.1f} ms of the profiled step's {1000 * wall:.1f} ms (profiler included)"
        )
    census = _census(mode, lr, steps)
    profile = cProfile.Profile()
    profile.enable()
    run_round(mode, steps, lr, device)
    profile.disable()
    spent = {
        (Path(file).name, function): cumulative
        for (file, _, function), (_, _, _, cumulative, _) in pstats.Stats(profile).stats.items()
    }
    rows = []
    for name, file, function in HOST_WORK:
        milliseconds = 1000 * spent.get((file, function), 0.0) / steps
        rows.append([name, f"{function} ({file})", f"{milliseconds:.2f}"])
    host_work = table(["host work", "function", f"ms per step (cProfile, {steps} steps)"], rows)
    return operators + "\n" + census + "\n" + host_work


def probe_table(measured: dict[str, Any]) -> str:
    modes = measured["modes"]
    rows = []
    for name, mode in modes.items():
        step = mode["s_per_step"]
        phases = [_phase_cell(mode["phase_s_per_step"][phase], step) for phase in PHASES]
        rows.append([name, mode["it_per_s"], f"{step * 1000:.0f}", *phases])
    return table(["mode", "it/s", "ms/step", *(f"{phase} ms (%)" for phase in PHASES)], rows)


def _phase_cell(seconds: float, step: float) -> str:
    return f"{seconds * 1000:.0f} ({100 * seconds / step:.0f}%)"


def host_ms_per_step(mode: dict[str, Any]) -> float:
    """A step's time outside the modules', the loss's and the optimizer's arithmetic: data (reading, click sampling,
    collation) and the rest (click maps, the iterative clicks' transforms, Python; the logits' resize and sigmoid
    too, which the hooks do not separate)."""
    phases = mode["phase_s_per_step"]
    return 1000 * (phases["data"] + phases["other"])


def ratios(measured: dict[str, Any]) -> dict[str, float]:
    modes = measured["modes"]
    cache = modes["cache"]
    phases = cache["phase_s_per_step"]
    return {
        "host ms per cache step (data + other)": host_ms_per_step(cache),
        "cache/in-memory": cache["it_per_s"] / modes["in-memory"]["it_per_s"],
        "cache/online": cache["it_per_s"] / modes["online"]["it_per_s"],
        "head share (head fwd + backward) of a cache step": (phases["head fwd"] + phases["backward"])
        / cache["s_per_step"],
        "featurizer share of an online step": modes["online"]["phase_s_per_step"]["featurizer"]
        / modes["online"]["s_per_step"],
    } | (
        {f"host ms per cache step, {LOADER_CLICKS}": host_ms_per_step(modes[LOADER_CLICKS])}
        if LOADER_CLICKS in modes
        else {}
    )


def checks_for(key: str, ratio: dict[str, float]) -> list[Check]:
    checks = [Check(f"({key}) cache / in-memory", ratio["cache/in-memory"], 0.9)]
    if key == "b":
        checks.append(Check("(b) cache / online", ratio["cache/online"], 10.0))
    return checks


def parse_args() -> argparse.Namespace:
    parser = base_parser("train_throughput", __doc__)
    parser.add_argument("--split", default="train")
    parser.add_argument("--items", type=int, default=8, help="store entries the batches are drawn from")
    parser.add_argument("--size", type=int, default=448, help="working size of probe (b)")
    parser.add_argument("--size-a", type=int, default=224, help="working size of probe (a), iSegProbe's head")
    parser.add_argument("--batch-size", type=int, default=2, help="batch size of probe (b)")
    parser.add_argument("--batch-size-a", type=int, default=1, help="batch size of probe (a)")
    parser.add_argument("--steps", type=int, default=3, help="steps per round of probe (b)")
    parser.add_argument("--steps-a", type=int, default=1, help="steps per round of probe (a)")
    parser.add_argument("--repeats-a", type=int, default=2, help="interleaved rounds of probe (a)")
    parser.add_argument(
        "--workers",
        default="0",
        help="DataLoader workers (spawned), as data.num_workers; `auto` times a GPU run's default (four for the "
        "store read as it goes), best with --steps 10 or more, since every round waits for the workers' first batch",
    )
    parser.add_argument("--probes", default="a,b", help="which probes to run: a, b or a,b")
    parser.add_argument(
        "--click-sampling",
        default="auto",
        choices=("auto", "loader", "device"),
        help="data.click_sampling of the probes (auto: on the device on a GPU, where the loader's way is also timed)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also print torch.profiler's top ops of a cache step, the operators a step dispatches by calling line, "
        "and cProfile's ms per step of its host work",
    )
    parser.add_argument(
        "--side-by-side",
        type=int,
        default=5,
        help="also time this many copies of probe (b) trained side by side from one loader, against one (0: skip)",
    )
    return parser.parse_args()


def probe_runs(args: argparse.Namespace) -> list[ProbeRun]:
    runs = {
        "a": ProbeRun(
            key="a",
            description="iSegProbe's head: bilinear + two 3x3 C->C convs at full res",
            preset="sbd_224",
            size=args.size_a,
            batch_size=args.batch_size_a,
            steps=args.steps_a,
            repeats=args.repeats_a,
        ),
        "b": ProbeRun(
            key="b",
            description="low-res probe: identity upsampler, head width 64",
            preset="quickstart",
            size=args.size,
            batch_size=args.batch_size,
            steps=args.steps,
            repeats=args.repeats,
        ),
    }
    return [runs[key.strip()] for key in args.probes.split(",") if key.strip()]


def main() -> None:
    args = parse_args()
    device = setup(args)
    featurizer = create_featurizer(args.featurizer, weights=args.weights)
    sections, checks, results = {}, [], {}
    for run in probe_runs(args):
        measured = measure_probe(args, run, featurizer, device)
        ratio = ratios(measured)
        measured["ratios"] = ratio
        measured["host_ms_per_step"] = host_ms_per_step(measured["modes"]["cache"])
        results[run.key] = measured
        title = f"probe ({run.key}) {run.description}; {run.size} px, batch {run.batch_size}, {args.featurizer}"
        untimed = ", ".join(f"{name} {ms:.1f}" for name, ms in measured["untimed_ms_per_step"].items())
        sections[title] = (
            probe_table(measured)
            + f"\nms per step with the phase hooks off (no synchronization inside a step): {untimed}\n"
            + "\n".join(f"{k}: {v:.3g}" for k, v in ratio.items())
        )
        if "profile" in measured:
            sections[f"probe ({run.key}) profile of one cache step"] = measured["profile"]
        checks.extend(checks_for(run.key, ratio))
        if run.key == "b" and args.side_by_side > 1:
            side = measure_side_by_side(args, run, args.side_by_side, device)
            one, many, in_turn = side.values()
            ratio = many["host"] / one["host"]
            data_ratio = many["data"] / one["data"]
            in_turn_ratio = in_turn["host"] / one["host"]
            results["side_by_side"] = {
                "ms_per_step": side,
                "host_ratio": ratio,
                "data_ratio": data_ratio,
                "in_turn_host_ratio": in_turn_ratio,
            }
            rows = [[name, f"{v['seconds']:.1f}", f"{v['data']:.1f}", f"{v['host']:.1f}"] for name, v in side.items()]
            sections[f"probe (b), {args.side_by_side} copies side by side (one read of each batch), cache"] = (
                table(["run", "ms/step", "data ms", "host ms (data + other)"], rows)
                + f"\nhost ms, {args.side_by_side} side by side / one: {ratio:.3g} ({in_turn_ratio:.3g} with each "
                "probe's step in turn)"
                + f"\ndata ms (the batch read once, shared), {args.side_by_side} side by side / one: {data_ratio:.3g}"
            )
            checks.append(Check(f"(b) host time, {args.side_by_side} probes side by side / one", ratio, 1.3, False))
    report("train_throughput", args, sections, checks, results)


if __name__ == "__main__":
    main()

"""What a training run remembers: the progress a checkpoint saves and --resume restores, the running means it
logs, the metadata every checkpoint carries, and the summary it ends with."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from isegprobe import __version__
from isegprobe.cache.schema import store_fingerprint
from isegprobe.config import TrainConfig
from isegprobe.config_loading import config_to_dict
from isegprobe.errors import UserError
from isegprobe.model import ISProbe
from isegprobe.training.schedule import StepSchedule
from isegprobe.training.trainer import StepResult


@dataclass
class RunProgress:
    """What a checkpoint must remember to resume exactly: the step, the best score, the epoch's running IoU, and the
    sums of the logging window in progress (`RunningMeans.saved`)."""

    step: int = 0
    best_value: float | None = None
    best_step: int | None = None
    metric_name: str = "train_iou"
    epoch_iou_sum: float | Tensor = 0.0  # a device tensor while an epoch runs: read back only when needed
    epoch_iou_count: int = 0
    log_window: Mapping[str, float] | None = None

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any], source: Path) -> RunProgress:
        """The progress that `source` (a checkpoint's JSON) records; a field that is not as `train` writes it is a
        UserError naming the file, raised before the resumed run writes anything."""
        try:
            best = metadata.get("best_metric") or {}
            epoch = metadata.get("epoch_metrics") or {}
            return cls(
                step=int(metadata["step"]),
                best_value=_optional_float(best.get("value")),
                best_step=_optional_int(best.get("step")),
                metric_name=str(best.get("name", "train_iou")),
                epoch_iou_sum=float(epoch.get("iou_sum", 0.0)),
                epoch_iou_count=int(epoch.get("iou_count", 0)),
                log_window=RunningMeans.checked_window(metadata.get("log_window")),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise UserError(
                f"{source}: cannot resume from it ({type(error).__name__}: {error}); its step, best_metric, "
                "epoch_metrics and log_window must be as train writes them"
            ) from error

    def add_epoch_iou(self, iou: Tensor) -> None:
        self.epoch_iou_sum = self.epoch_iou_sum + iou.sum()
        self.epoch_iou_count += iou.numel()

    def epoch_iou(self) -> float:
        return float(self.epoch_iou_sum) / max(self.epoch_iou_count, 1)

    def reset_epoch(self) -> None:
        self.epoch_iou_sum, self.epoch_iou_count = 0.0, 0


def config_changes(before: Mapping[str, Any], after: TrainConfig, step: int, earlier: Any) -> list[dict[str, Any]]:
    """The run's record of the settings a --resume changed (`--set` on a run under way): the record the checkpoint
    kept (`earlier`), and the keys that differ between its config (`before`) and `after`, from `step` on, as
    {"step": step, "changed": {"optim.lr": [old, new]}}. `config` then holds the latest settings only."""
    history = recorded_changes(earlier)
    old, new = dotted(before), dotted(config_to_dict(after))
    changed = {key: [old.get(key), value] for key, value in new.items() if old.get(key) != value}
    return [*history, {"step": step, "changed": changed}] if changed else history


def recorded_changes(earlier: Any) -> list[dict[str, Any]]:
    """The `config_changes` a checkpoint kept (none where it kept no list)."""
    return [dict(entry) for entry in earlier] if isinstance(earlier, list) else []


def changes_text(changes: list[dict[str, Any]]) -> str:
    """`config_changes` in words, one line each: `from step 120 on: optim.lr 0.0005 -> 1.0`."""
    return "\n".join(
        f"from step {entry['step']} on: "
        + ", ".join(f"{key} {old!r} -> {new!r}" for key, (old, new) in entry["changed"].items())
        for entry in changes
    )


def dotted(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested mapping's leaves by dotted key (`optim.lr`)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat |= dotted(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


class RunningMeans:
    """Loss, BCE and IoU summed on the device, read back only when logged, so steps don't wait on the GPU.

    A checkpoint keeps the sums of the window in progress (`saved`), and a resumed run starts from them: a run
    stopped between two logged steps (Ctrl-C, or `checkpoint.every_steps` that `logging.every_steps` does not
    divide) then logs, at the next logged step, the mean over the same steps as a run never stopped, bit for bit."""

    _SUMS = ("loss", "bce", "iou")

    def __init__(self, device: torch.device, saved: Mapping[str, float] | None = None) -> None:
        self.device = device
        self._reset()
        if saved:
            for name in self._SUMS:
                setattr(self, name, torch.tensor(saved[name], dtype=torch.float32, device=device))
            self.steps, self.images = int(saved["steps"]), int(saved["images"])

    def _reset(self) -> None:
        self.loss = torch.zeros((), device=self.device)
        self.bce = torch.zeros((), device=self.device)
        self.iou = torch.zeros((), device=self.device)
        self.steps = 0
        self.images = 0

    @classmethod
    def checked_window(cls, saved: Any) -> dict[str, float] | None:
        """A window as `saved` wrote it, its numbers read as such (KeyError, TypeError or ValueError otherwise)."""
        if saved is None:
            return None
        return {name: float(saved[name]) for name in cls._SUMS} | {
            "steps": int(saved["steps"]),
            "images": int(saved["images"]),
        }

    def saved(self) -> dict[str, float]:
        """The window's sums and counts, for a checkpoint (float32 sums as Python floats: exactly)."""
        return {name: float(getattr(self, name)) for name in self._SUMS} | {
            "steps": self.steps,
            "images": self.images,
        }

    def add(self, result: StepResult) -> None:
        self.loss += result.loss
        self.bce += result.bce
        self.iou += result.iou.sum()
        self.steps += 1
        self.images += result.iou.numel()

    def pop(self) -> dict[str, float]:
        steps = max(self.steps, 1)
        means = {
            "loss": float(self.loss) / steps,
            "bce": float(self.bce) / steps,
            "iou": float(self.iou) / max(self.images, 1),
        }
        self._reset()
        return means


class RunDescription:
    """The fixed part of every checkpoint's JSON: config, probe dims, data provenance, versions."""

    def __init__(
        self,
        config: TrainConfig,
        probe: ISProbe,
        schedule: StepSchedule,
        dataset: Dataset,
        val_dataset: Dataset | None,
        preprocessing: dict[str, Any],
        online: bool,
        config_changes: list[dict[str, Any]] | None = None,
    ) -> None:
        self.fixed = {
            "package_version": __version__,
            "config": config_to_dict(config),
            "model": probe.dims(),
            "featurizer_provenance": dict(getattr(dataset, "provenance", None) or {}),
            "store_path": str(getattr(dataset, "path", "") or ""),
            "store_fingerprint": dataset_fingerprint(dataset),
            "val_store_path": str(getattr(val_dataset, "path", "") or ""),
            "val_store_fingerprint": None if val_dataset is None else dataset_fingerprint(val_dataset),
            "preprocessing": preprocessing,
            "online": online,
            "total_steps": schedule.total_steps,
            "steps_per_epoch": schedule.steps_per_epoch,
            "config_changes": config_changes or [],
        }
        self.schedule = schedule

    def metadata(self, progress: RunProgress, running: RunningMeans | None = None) -> dict[str, Any]:
        """A checkpoint's JSON; with `running`, the logging window in progress too."""
        window = {"log_window": running.saved()} if running is not None else {}
        return {
            **self.fixed,
            "step": progress.step,
            "epoch": self.schedule.epoch_of(progress.step),
            "lr": self.schedule.lr_at(progress.step),
            "best_metric": {"name": progress.metric_name, "value": progress.best_value, "step": progress.best_step},
            "epoch_metrics": {"iou_sum": float(progress.epoch_iou_sum), "iou_count": progress.epoch_iou_count},
            **window,
        }


@dataclass
class TrainSummary:
    run_dir: Path
    step: int
    epoch: int
    best_metric: float | None
    best_metric_name: str  # train_iou, or val_iou with a validation store: the metric `best` was chosen by
    best_step: int | None
    first_logged: dict[str, float] | None  # the run's first and last logged training means, before a --resume too
    last_logged: dict[str, float] | None
    stopped_by: str | None = None  # the signal (SIGINT, SIGTERM) that ended the run early, after saving `last`
    diverged: str | None = None  # why a run trained beside others stopped early (`Diverged`), the others going on
    diverged_from: int | None = None  # the first step whose loss was not finite, where `diverged` knows it
    samples: int = 0  # the samples this invocation trained on (this rank's), and those with an object as target
    samples_with_an_object: int = 0

    def nothing_to_segment(self) -> str | None:
        """A warning when not one sample had an object: the probe then learnt to predict nothing, and its IoU of 1.0
        is an empty prediction's of an empty target."""
        if self.samples == 0 or self.samples_with_an_object:
            return None
        return (
            f"warning: not one of the {self.samples} samples this run trained on had an object to segment (every "
            "object under sampler.min_object_area at the store's working size?): the probe learns to predict nothing, "
            "and an empty prediction of an empty target scores an IoU of 1.0"
        )

    def progress(self) -> str:
        """How the logged training means moved, first to last; the IoU and the BCE show learning that the
        normalized focal loss (a mean over the hardest pixels) can hide."""
        if not self.first_logged or not self.last_logged or self.first_logged is self.last_logged:
            return "too few logged steps to show a trend"
        parts = []
        for name, label in (("loss", "loss (normalized focal)"), ("bce", "pixel BCE"), ("iou", "IoU")):
            first, last = self.first_logged[name], self.last_logged[name]
            change = f" ({(last - first) / first:+.0%})" if name != "iou" and first > 0 else ""
            parts.append(f"{label} {first:.3f} -> {last:.3f}{change}")
        return "first -> last logged means: " + ", ".join(parts)


def dataset_fingerprint(dataset: Dataset) -> str | None:
    """A store's `store_fingerprint` (None for data that is no store), which `--resume` checks the store it is given
    against."""
    store = getattr(dataset, "store", None)
    return None if store is None else store_fingerprint(store.attrs)

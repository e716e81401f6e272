"""The training loop: RITM's iterative-click recipe on cached (or online) frozen features.

`Trainer` does one optimisation step and knows nothing of files; `train` runs a whole schedule around it with the
data loader, logging, checkpoints and --resume. Both are usable without the CLI (quickstart, benchmarks, tests).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from isegprobe import __version__
from isegprobe.cache.schema import check_same_featurizer
from isegprobe.config import TrainConfig, config_to_dict, config_to_yaml
from isegprobe.data.preprocess import normalize_images
from isegprobe.devices import backbone_autocast
from isegprobe.distributed import barrier, init_from_env
from isegprobe.errors import UserError
from isegprobe.loader_workers import ends_with_this_process
from isegprobe.locks import exclusive_lock
from isegprobe.model import ISProbe
from isegprobe.same_images import warn_when_training_on_a_test_split
from isegprobe.training.checkpoint import (
    atomic_write_bytes,
    recover_checkpoint,
    restore_training_state,
    save_checkpoint,
)
from isegprobe.training.click_dataset import ClickTrainingSet, EpochShuffleSampler
from isegprobe.training.divergence import DivergenceWatch
from isegprobe.training.losses import NormalizedFocalLoss, masked_bce
from isegprobe.training.next_clicks import add_next_clicks
from isegprobe.training.points_sampler import MultiPointSampler
from isegprobe.training.run_logger import RunLogger
from isegprobe.training.sample_weights import draw_probabilities, read_sample_scores
from isegprobe.training.schedule import StepSchedule
from isegprobe.training.stopping import StopRequests
from isegprobe.training.store_checks import check_store_fits
from isegprobe.training.visuals import prediction_panels

log = logging.getLogger(__name__)

_VALIDATION_STREAM = 1


@dataclass
class DeviceBatch:
    images: Tensor  # float [B, 3, H, W], normalized
    features: Tensor | None  # [B, C, h, w]; None for early fusion
    target: Tensor  # bool [B, H, W]
    valid: Tensor  # bool [B, H, W]
    clicks: Tensor  # long [B, K, 3], the last max_num_next_clicks rows kept free for iterative clicks


@dataclass
class StepResult:
    loss: Tensor  # scalar, detached
    bce: Tensor  # scalar, detached: the plain pixel cross-entropy of the same logits, for the logs
    iou: Tensor  # [B], detached
    num_next_clicks: int
    prob: Tensor  # [B, 1, H, W], detached
    clicks: Tensor  # [B, K, 3], the clicks the loss saw


@dataclass
class TrainSummary:
    run_dir: Path
    step: int
    epoch: int
    best_metric: float | None
    best_metric_name: str  # train_iou, or val_iou with a validation store: the metric `best` was chosen by
    best_step: int | None
    first_logged: dict[str, float] | None  # the first and last logged training means of this invocation
    last_logged: dict[str, float] | None
    stopped_by: str | None = None  # the signal (SIGINT, SIGTERM) that ended the run early, after saving `last`

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


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available here")
    return device


def batch_iou(logits: Tensor, target: Tensor, valid: Tensor) -> Tensor:
    """IoU per image [B] at probability 0.5, over valid pixels; an empty target predicted empty scores 1."""
    predicted = (logits[:, 0] > 0) & valid
    truth = target & valid
    intersection = (predicted & truth).flatten(1).sum(1).float()
    union = (predicted | truth).flatten(1).sum(1).float()
    return torch.where(union > 0, intersection / union.clamp(min=1), torch.ones_like(union))


class Trainer:
    """One optimisation step of a probe: initial clicks, RITM's no-grad iterative clicks, loss, Adam step."""

    def __init__(
        self,
        config: TrainConfig,
        probe: ISProbe,
        preprocessing: Mapping[str, Any],
        device: str | torch.device = "cpu",
        featurizer: nn.Module | None = None,
        online: bool = False,
    ) -> None:
        self.config = config
        self.device = torch.device(device)
        self.online = online or probe.needs_featurizer
        self.mean = tuple(float(value) for value in preprocessing["mean"])
        self.std = tuple(float(value) for value in preprocessing["std"])
        if self.online and featurizer is None:
            raise UserError("online training (--online or fusion before_backbone) needs a featurizer")
        self.featurizer = featurizer
        if featurizer is not None:
            _check_normalization(featurizer, self.mean, self.std)
            featurizer.to(self.device).requires_grad_(False).eval()
            if probe.needs_featurizer:
                probe.attach_featurizer(featurizer)
        self.probe = probe.to(self.device)
        if self.device.type == "cuda":
            self.probe = self.probe.to(memory_format=torch.channels_last)
            torch.backends.cudnn.benchmark = True  # every batch has the store's one working size
        self.model: nn.Module = self.probe
        self.loss_fn = NormalizedFocalLoss(config.loss.alpha, config.loss.gamma)
        self.optimizer = torch.optim.Adam(
            [parameter for parameter in self.probe.parameters() if parameter.requires_grad],
            lr=config.optim.lr,
            betas=tuple(config.optim.betas),
            eps=config.optim.eps,
            weight_decay=config.optim.weight_decay,
        )

    def distribute(self) -> None:
        """Average gradients over the torchrun ranks with DistributedDataParallel.

        Only the loss pass goes through the wrapper; the no-grad iterative-click passes call the probe itself.
        """
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        self.model = DistributedDataParallel(self.probe, device_ids=device_ids)

    def to_device(self, batch: Mapping[str, Any]) -> DeviceBatch:
        """Move a collated batch to the device, normalize it there, and get its features (cached or computed)."""
        non_blocking = self.device.type == "cuda"
        images = normalize_images(batch["image"].to(self.device, non_blocking=non_blocking), self.mean, self.std)
        clicks = batch["clicks"].to(self.device, non_blocking=non_blocking)
        free_rows = clicks.new_tensor((-1, -1, 0)).expand(clicks.shape[0], self.config.clicks.max_num_next_clicks, 3)
        return DeviceBatch(
            images=images,
            features=self._features(batch, images),
            target=batch["target"].to(self.device, non_blocking=non_blocking),
            valid=batch["valid"].to(self.device, non_blocking=non_blocking),
            clicks=torch.cat((clicks, free_rows), dim=1),
        )

    def _features(self, batch: Mapping[str, Any], images: Tensor) -> Tensor | None:
        if self.probe.needs_featurizer:
            return None
        if self.online:
            with torch.no_grad(), backbone_autocast(self.device):
                return self.featurizer(images)
        if "features" not in batch:
            raise UserError("the dataset gives no cached features: train with --online")
        return batch["features"].to(self.device, non_blocking=self.device.type == "cuda")

    def loss_on(self, batch: DeviceBatch, clicks: Tensor, prev_mask: Tensor) -> tuple[Tensor, Tensor]:
        """(mean loss, logits) of the probe for given clicks and previous mask."""
        logits = self.model(batch.features, batch.images, clicks, prev_mask)
        loss = self.loss_fn(logits, batch.target[:, None], batch.valid[:, None])
        return loss, logits

    def simulate_clicks(self, batch: DeviceBatch, rng: np.random.Generator) -> tuple[Tensor, Tensor, int]:
        """RITM: 0..max_num_next_clicks no-grad passes, each adding a click on the error and feeding its mask back."""
        clicks = batch.clicks
        prev_mask = torch.zeros_like(batch.images[:, :1])
        count = int(rng.integers(0, self.config.clicks.max_num_next_clicks + 1))
        if count == 0:
            return clicks, prev_mask, 0
        first_free = clicks.shape[1] - self.config.clicks.max_num_next_clicks
        was_training = self.probe.training
        self.probe.eval()
        with torch.no_grad():
            for index in range(count):
                prev_mask = torch.sigmoid(self.probe(batch.features, batch.images, clicks, prev_mask))
                clicks = add_next_clicks(
                    prev_mask,
                    batch.target,
                    batch.valid,
                    clicks,
                    first_free + index,
                    rng,
                    self.config.clicks.pred_threshold,
                )
        self.probe.train(was_training)
        return clicks, prev_mask, count

    def train_step(self, batch: Mapping[str, Any], step: int, lr: float) -> StepResult:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        device_batch = self.to_device(batch)
        rng = np.random.default_rng([self.config.seed, step])
        self.probe.train()
        clicks, prev_mask, count = self.simulate_clicks(device_batch, rng)
        loss, logits = self.loss_on(device_batch, clicks, prev_mask)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        logits = logits.detach()
        return StepResult(
            loss=loss.detach(),
            bce=masked_bce(logits, device_batch.target[:, None], device_batch.valid[:, None]).mean(),
            iou=batch_iou(logits, device_batch.target, device_batch.valid),
            num_next_clicks=count,
            prob=torch.sigmoid(logits),
            clicks=clicks,
        )

    def evaluate(self, loader: DataLoader) -> tuple[float, float]:
        """(mean loss, mean IoU) over a loader, with fixed clicks, as RITM's validation pass."""
        losses, ious = [], []
        self.probe.eval()
        for index, batch in enumerate(loader):
            device_batch = self.to_device(batch)
            rng = np.random.default_rng([self.config.seed, _VALIDATION_STREAM, index])
            clicks, prev_mask, _ = self.simulate_clicks(device_batch, rng)
            with torch.no_grad():
                loss, logits = self.loss_on(device_batch, clicks, prev_mask)
            losses.append(loss.item())
            ious.extend(batch_iou(logits, device_batch.target, device_batch.valid).tolist())
        self.probe.train()
        return float(np.mean(losses)), float(np.mean(ious))


def _check_normalization(featurizer: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
    """Online features must see images normalized as the cached ones were, or the two modes would disagree."""
    for name, expected in (("mean", mean), ("std", std)):
        own = getattr(featurizer, name, None)
        if own is not None and not np.allclose(np.asarray(own, dtype=np.float64), expected, atol=1e-4):
            raise UserError(
                f"the featurizer's {name} {list(own)} differs from the store's preprocessing {name} {expected}"
            )


def probe_dims(dataset: Dataset, featurizer: nn.Module | None, size: int) -> dict[str, int]:
    """feature_dim, patch_size and token_dim for a probe on this dataset (from the featurizer, else the cache)."""
    if featurizer is not None:
        return {
            "feature_dim": int(featurizer.dim),
            "patch_size": int(featurizer.patch_size),
            "token_dim": int(getattr(featurizer, "embed_dim", featurizer.dim)),
        }
    first = dataset[0]
    if "features" not in first:
        raise UserError("the dataset gives no cached features and no featurizer was given")
    feature_dim, height = int(first["features"].shape[0]), int(first["features"].shape[1])
    provenance = getattr(dataset, "provenance", None) or {}
    patch_size = int(provenance.get("patch_size") or size // height)
    return {"feature_dim": feature_dim, "patch_size": patch_size, "token_dim": feature_dim}


def train(
    config: TrainConfig,
    dataset: Dataset,
    run_dir: str | Path,
    *,
    featurizer: nn.Module | None = None,
    online: bool = False,
    resume: bool = False,
    device: str | torch.device | None = None,
    use_wandb: bool = False,
    val_dataset: Dataset | None = None,
    progress: bool = True,
) -> TrainSummary:
    """Train a probe on a cache reader's dataset and write checkpoints and logs into `run_dir`.

    `dataset` entries follow the cache reader's contract; the dataset object has `.preprocessing` (size, mean, std)
    and optionally `.provenance`, `.path` and `.num_views` (entries item-major, that many views per item; an epoch
    shows each item once, in one of them). With `resume`, the run continues from `run_dir/last.*` at its step.
    """
    rank, world, device = init_from_env(str(resolve_device(device)))
    if config.data.batch_size % world:
        raise UserError(f"data.batch_size {config.data.batch_size} must be a multiple of the {world} torchrun ranks")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(run_dir) if rank == 0 else nullcontext():
        if rank == 0:
            for name in ("last", "best"):
                recover_checkpoint(run_dir, name)
        return _train(
            config, dataset, run_dir, rank, world, device, featurizer, online, resume, use_wandb, val_dataset, progress
        )


def _train(
    config: TrainConfig,
    dataset: Dataset,
    run_dir: Path,
    rank: int,
    world: int,
    device: torch.device,
    featurizer: nn.Module | None,
    online: bool,
    resume: bool,
    use_wandb: bool,
    val_dataset: Dataset | None,
    progress: bool,
) -> TrainSummary:
    """`train` once its run folder is held."""
    if not resume and (run_dir / "last.json").is_file():
        raise UserError(
            f"{run_dir} already holds a run (last.json): --resume continues it; to start over, delete it or choose "
            "another --out"
        )
    preprocessing = dict(dataset.preprocessing)
    size = int(preprocessing["size"])
    check_store_fits(config.data, preprocessing, getattr(dataset, "provenance", None))
    store = getattr(dataset, "store", None)  # a CachedDataset's; other datasets know no split
    if store is not None and rank == 0:
        warn_when_training_on_a_test_split(store.attrs["dataset"])
    if val_dataset is not None:
        _check_validation_matches(dataset, val_dataset, size)
    if config.model.fusion == "before_backbone" and not online:
        log.warning("fusion before_backbone runs the frozen backbone in the loop (online); cached features are unused")
    online = online or config.model.fusion == "before_backbone"

    torch.manual_seed(config.seed)
    probe = ISProbe(config.model, **probe_dims(dataset, featurizer if online else None, size))
    _check_upsampler_is_not_frozen_at_random(config, probe)
    trainer = Trainer(config, probe, preprocessing, device, featurizer if online else None, online)
    point_sampler = MultiPointSampler(config.sampler)
    views_per_item = int(getattr(dataset, "num_views", 1))
    items = ClickTrainingSet(
        dataset,
        point_sampler,
        config.seed,
        with_features=not online,
        views_per_item=views_per_item,
        keep_background_prob=config.data.keep_background_prob,
        augment=config.data.augment,
    )
    schedule = StepSchedule.from_config(config.schedule, config.optim.lr, len(items), config.data.batch_size)
    if rank == 0 and schedule.total_steps < (config.schedule.max_iters or 0):
        log.warning(
            "--max-iters (schedule.max_iters) %d: the schedule ends sooner, after schedule.epochs %d of this store "
            "(%d steps); set schedule.epochs to train longer",
            config.schedule.max_iters,
            config.schedule.epochs,
            schedule.total_steps,
        )
    if rank == 0 and progress:
        tqdm.write(_schedule_line(len(items), views_per_item, config.data.batch_size, schedule), file=sys.stderr)

    state = _ProgressState()
    if resume:
        state = _ProgressState.from_metadata(restore_training_state(run_dir, trainer.probe, trainer.optimizer))
        log.info("resuming %s at step %d of %d", run_dir, state.step, schedule.total_steps)
    if world > 1:
        trainer.distribute()

    probabilities = None
    if config.data.sample_weights is not None:
        scores = read_sample_scores(config.data.sample_weights)
        item_ids = [dataset.item_ids[item] for item in dataset.items]
        probabilities = draw_probabilities(item_ids, scores, config.data.sample_weights_gamma)
    shuffle = EpochShuffleSampler(len(items), seed=config.seed, rank=rank, world=world, probabilities=probabilities)
    loader = _loader(items, config, device, shuffle, config.data.batch_size // world)
    val_loader = None
    if val_dataset is not None:
        val_items = ClickTrainingSet(val_dataset, point_sampler, config.seed, with_features=not online)
        val_order = EpochShuffleSampler(len(val_dataset), seed=config.seed, shuffle=False)
        val_loader = _loader(val_items, config, device, val_order, config.data.batch_size)

    describe = _RunDescription(config, trainer.probe, schedule, dataset, val_dataset, preprocessing, online)
    logger = RunLogger(
        run_dir,
        config_to_dict(config),
        tensorboard=config.logging.tensorboard and rank == 0,
        use_wandb=use_wandb and rank == 0,
        wandb_project=config.logging.wandb_project,
        write_csv=rank == 0,
        resumed_at=state.step if resume else None,
    )
    if rank == 0:
        atomic_write_bytes(run_dir / "config.yaml", config_to_yaml(config).encode())
    bar = tqdm(
        total=schedule.total_steps, initial=state.step, unit="it", disable=not progress or rank != 0, dynamic_ncols=True
    )
    running = _RunningMeans(device)
    divergence = DivergenceWatch(device)
    saved_step = state.step if resume else None
    first_logged = last_logged = None
    stopping = False
    with StopRequests() as stop:
        try:
            while state.step < schedule.total_steps and not stopping:
                epoch = schedule.epoch_of(state.step)
                shuffle.start(epoch, (state.step - epoch * schedule.steps_per_epoch) * config.data.batch_size)
                for batch in loader:
                    result = trainer.train_step(batch, state.step, schedule.lr_at(state.step))
                    state.step += 1
                    bar.update(1)
                    running.add(result)
                    divergence.add(result.loss, state.step)
                    state.add_epoch_iou(result.iou)
                    epoch_done = state.step % schedule.steps_per_epoch == 0 or state.step == schedule.total_steps
                    # Every rank asks at every step but the last, so that all of them agree on the same step.
                    stopping = state.step < schedule.total_steps and stop.agreed(device)
                    every = config.checkpoint.every_steps
                    saving = epoch_done or stopping or bool(every and state.step % every == 0)
                    logging_due = state.step % config.logging.every_steps == 0 or state.step == schedule.total_steps
                    lr = schedule.lr_at(state.step - 1)
                    if saving or logging_due:  # the same steps on every rank
                        divergence.check(trainer.probe, state.step, lr, run_dir, saved_step)
                    if logging_due:
                        last_logged = {**running.pop(), "lr": lr}
                        first_logged = first_logged or last_logged
                        logger.scalars({f"train/{name}": value for name, value in last_logged.items()}, state.step)
                        bar.set_postfix(
                            loss=f"{last_logged['loss']:.4f}", iou=f"{last_logged['iou']:.3f}", lr=f"{lr:.1e}"
                        )
                    if state.step % config.logging.image_every_steps == 0:
                        panels = prediction_panels(
                            batch["image"], batch["target"], result.prob, result.clicks, config.logging.num_images
                        )
                        logger.images("train/predictions", panels, state.step)
                    if epoch_done and rank == 0:
                        _close_epoch(trainer, state, val_loader, logger, describe, run_dir)
                    elif epoch_done:
                        state.reset_epoch()
                    if rank == 0 and saving:
                        save_checkpoint(run_dir, "last", trainer.probe, describe.metadata(state), trainer.optimizer)
                        saved_step = state.step
                    if stopping or state.step >= schedule.total_steps:
                        break
            if state.step == 0 and rank == 0:
                # A run of zero steps keeps the untrained probe: the baseline that evaluation compares training with.
                save_checkpoint(run_dir, "last", trainer.probe, describe.metadata(state), trainer.optimizer)
        finally:
            bar.close()
            logger.close()
    barrier()
    epoch = schedule.epoch_of(max(state.step - 1, 0))
    stopped_by = stop.signal.name if stopping else None
    return TrainSummary(
        run_dir,
        state.step,
        epoch,
        state.best_value,
        state.metric_name,
        state.best_step,
        first_logged,
        last_logged,
        stopped_by,
    )


def _schedule_line(images: int, views: int, batch_size: int, schedule: StepSchedule) -> str:
    """What an epoch is and how long the run lasts, said before it starts: the schedule follows from the store."""
    per_image = f" x {views} views (one per image and epoch)" if views > 1 else ""
    return (
        f"training on {images} images{per_image} in batches of {batch_size}: {schedule.steps_per_epoch} steps an "
        f"epoch, {schedule.total_steps} steps in all"
    )


def _check_validation_matches(dataset: Dataset, val_dataset: Dataset, size: int) -> None:
    """The best checkpoint is picked on the validation store, so it must hold the training store's kind of
    features at the same working size; otherwise training would crash at the first validation or, worse, pick
    checkpoints on features the probe never saw."""
    where = f"--val-cache {getattr(val_dataset, 'path', '')}"
    trained, validation = (getattr(store, "provenance", None) or {} for store in (dataset, val_dataset))
    check_same_featurizer(trained, validation, where, trained_on="training store")
    val_size = int(val_dataset.preprocessing["size"])
    if val_size != size:
        raise UserError(f"{where}: extracted at {val_size} px, the training store at {size} px")


def _check_upsampler_is_not_frozen_at_random(config: TrainConfig, probe: ISProbe) -> None:
    upsampler = config.model.upsampler
    if probe.upsampler_frozen_at_random:
        raise UserError(
            f"upsampler {upsampler.name!r} has no weights: pass its authors' checkpoint with "
            f"--set model.upsampler.weights=PATH, or train it from scratch with --set model.upsampler.trainable=true"
        )


def _loader(
    items: Dataset, config: TrainConfig, device: torch.device, sampler: EpochShuffleSampler, batch_size: int
) -> DataLoader:
    """Workers are spawned, not forked: tensorstore (the cache reader) and CUDA both break in a forked child once
    the parent has used them. They persist across epochs, so the start-up cost is paid once, and they end with
    the training process, however it ends."""
    workers = config.data.num_workers
    return DataLoader(
        items,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        multiprocessing_context="spawn" if workers > 0 else None,
        worker_init_fn=ends_with_this_process(),
        drop_last=False,
    )


def _close_epoch(
    trainer: Trainer,
    state: _ProgressState,
    val_loader: DataLoader | None,
    logger: RunLogger,
    describe: _RunDescription,
    run_dir: Path,
) -> None:
    """Score the epoch (validation IoU, else the epoch's training IoU) and keep the best weights."""
    if val_loader is not None:
        val_loss, metric = trainer.evaluate(val_loader)
        logger.scalars({"val/loss": val_loss, "val/iou": metric}, state.step)
        state.metric_name = "val_iou"
    else:
        metric = state.epoch_iou()
        state.metric_name = "train_iou"
    logger.scalars({"epoch/" + state.metric_name: metric}, state.step)
    if state.best_value is None or metric > state.best_value:
        state.best_value, state.best_step = metric, state.step
        save_checkpoint(run_dir, "best", trainer.probe, describe.metadata(state))
    state.reset_epoch()


@dataclass
class _ProgressState:
    """What a checkpoint must remember to resume exactly: the step, the best score, the epoch's running IoU."""

    step: int = 0
    best_value: float | None = None
    best_step: int | None = None
    metric_name: str = "train_iou"
    epoch_iou_sum: float | Tensor = 0.0  # a device tensor while an epoch runs: read back only when needed
    epoch_iou_count: int = 0

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> _ProgressState:
        best = metadata.get("best_metric") or {}
        epoch = metadata.get("epoch_metrics") or {}
        return cls(
            step=int(metadata["step"]),
            best_value=best.get("value"),
            best_step=best.get("step"),
            metric_name=best.get("name", "train_iou"),
            epoch_iou_sum=float(epoch.get("iou_sum", 0.0)),
            epoch_iou_count=int(epoch.get("iou_count", 0)),
        )

    def add_epoch_iou(self, iou: Tensor) -> None:
        self.epoch_iou_sum = self.epoch_iou_sum + iou.sum()
        self.epoch_iou_count += iou.numel()

    def epoch_iou(self) -> float:
        return float(self.epoch_iou_sum) / max(self.epoch_iou_count, 1)

    def reset_epoch(self) -> None:
        self.epoch_iou_sum, self.epoch_iou_count = 0.0, 0


class _RunningMeans:
    """Loss, BCE and IoU summed on the device, read back only when logged, so steps don't wait on the GPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._reset()

    def _reset(self) -> None:
        self.loss = torch.zeros((), device=self.device)
        self.bce = torch.zeros((), device=self.device)
        self.iou = torch.zeros((), device=self.device)
        self.steps = 0
        self.images = 0

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


class _RunDescription:
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
    ) -> None:
        self.fixed = {
            "package_version": __version__,
            "config": config_to_dict(config),
            "model": probe.dims(),
            "featurizer_provenance": dict(getattr(dataset, "provenance", None) or {}),
            "store_path": str(getattr(dataset, "path", "") or ""),
            "val_store_path": str(getattr(val_dataset, "path", "") or ""),
            "preprocessing": preprocessing,
            "online": online,
            "total_steps": schedule.total_steps,
            "steps_per_epoch": schedule.steps_per_epoch,
        }
        self.schedule = schedule

    def metadata(self, state: _ProgressState) -> dict[str, Any]:
        return {
            **self.fixed,
            "step": state.step,
            "epoch": self.schedule.epoch_of(state.step),
            "lr": self.schedule.lr_at(state.step),
            "best_metric": {"name": state.metric_name, "value": state.best_value, "step": state.best_step},
            "epoch_metrics": {"iou_sum": float(state.epoch_iou_sum), "iou_count": state.epoch_iou_count},
        }

"""A whole training run: the step loop around `Trainer.train_step`, with logging, validation, checkpoints,
--resume and stopping on a signal. Usable without the CLI (quickstart, benchmarks, tests)."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from isegprobe.config import TrainConfig, config_to_dict, config_to_yaml
from isegprobe.devices import resolve_device
from isegprobe.distributed import barrier, init_from_env
from isegprobe.errors import UserError
from isegprobe.locks import exclusive_lock
from isegprobe.training.checkpoint import atomic_write_bytes, recover_checkpoint, save_checkpoint
from isegprobe.training.divergence import DivergenceWatch
from isegprobe.training.run_logger import RunLogger
from isegprobe.training.run_setup import RunSetUp, set_up_run
from isegprobe.training.run_state import RunDescription, RunningMeans, RunProgress, TrainSummary
from isegprobe.training.stopping import StopRequests
from isegprobe.training.trainer import Trainer
from isegprobe.training.visuals import prediction_panels


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
    rank, world, device = init_from_env(resolve_device(None if device is None else str(device)))
    if config.data.batch_size % world:
        raise UserError(f"data.batch_size {config.data.batch_size} must be a multiple of the {world} torchrun ranks")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(run_dir) if rank == 0 else nullcontext():
        if rank == 0:
            for name in ("last", "best"):
                recover_checkpoint(run_dir, name)
        run = set_up_run(
            config,
            dataset,
            run_dir,
            rank=rank,
            world=world,
            device=device,
            featurizer=featurizer,
            online=online,
            resume=resume,
            val_dataset=val_dataset,
            progress=progress,
        )
        return _run_steps(config, run, run_dir, rank, device, resume, use_wandb, progress)


def _run_steps(
    config: TrainConfig,
    run: RunSetUp,
    run_dir: Path,
    rank: int,
    device: torch.device,
    resume: bool,
    use_wandb: bool,
    progress: bool,
) -> TrainSummary:
    """Steps from `run.state` to the end of the schedule, or to the step after which a signal asked to stop."""
    trainer, schedule, state, describe = run.trainer, run.schedule, run.state, run.description
    shuffle = run.loader.sampler
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
    running = RunningMeans(device)
    divergence = DivergenceWatch(device)
    saved_step = state.step if resume else None
    first_logged = last_logged = None
    stopping = False
    with StopRequests() as stop:
        try:
            while state.step < schedule.total_steps and not stopping:
                epoch = schedule.epoch_of(state.step)
                shuffle.start(epoch, (state.step - epoch * schedule.steps_per_epoch) * config.data.batch_size)
                for batch in run.loader:
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
                        _close_epoch(trainer, state, run.val_loader, logger, describe, run_dir)
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
    return TrainSummary(
        run_dir,
        step=state.step,
        epoch=schedule.epoch_of(max(state.step - 1, 0)),
        best_metric=state.best_value,
        best_metric_name=state.metric_name,
        best_step=state.best_step,
        first_logged=first_logged,
        last_logged=last_logged,
        stopped_by=stop.signal.name if stopping else None,
    )


def _close_epoch(
    trainer: Trainer,
    state: RunProgress,
    val_loader: DataLoader | None,
    logger: RunLogger,
    describe: RunDescription,
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

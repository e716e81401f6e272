"""A whole training run: the step loop around `Trainer.train_step`, with logging, validation, checkpoints,
--resume and stopping on a signal. Usable without the CLI (quickstart, benchmarks, tests).

Several probes can train side by side from one loader (`train_side_by_side`): each batch is read, decoded and
given its initial clicks once, and every probe takes its own step on it, with its own iterative clicks, optimizer,
checkpoints and logs. Each run's numbers are those it gets alone with the same config.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from isegprobe.atomic_files import atomic_write_bytes
from isegprobe.config import TrainConfig
from isegprobe.config_loading import config_to_dict, config_to_yaml
from isegprobe.devices import resolve_device
from isegprobe.distributed import LostRank, barrier, init_from_env, lost_contact, refuse_ranks_that_differ
from isegprobe.errors import UserError
from isegprobe.locks import exclusive_lock
from isegprobe.model import needs_featurizer_online
from isegprobe.output_files import folders_removed_if_left_empty
from isegprobe.training.checkpoint import recover_checkpoint, save_checkpoint
from isegprobe.training.divergence import Diverged, DivergenceWatch
from isegprobe.training.run_logger import SCALARS_CSV, RunLogger, logged_steps
from isegprobe.training.run_setup import RunSetUp, set_up_run
from isegprobe.training.run_state import RunningMeans, TrainSummary, changes_text, dataset_fingerprint, dotted
from isegprobe.training.side_by_side import check_shared_batches
from isegprobe.training.stopping import StopRequests
from isegprobe.training.trainer import DeviceBatch, StepRequest, StepResult, train_steps_together
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
    return train_side_by_side(
        [config],
        dataset,
        [run_dir],
        featurizer=featurizer,
        online=online,
        resume=resume,
        device=device,
        use_wandb=use_wandb,
        val_dataset=val_dataset,
        progress=progress,
    )[0]


def train_side_by_side(
    configs: Sequence[TrainConfig],
    dataset: Dataset,
    run_dirs: Sequence[str | Path],
    *,
    featurizer: nn.Module | None = None,
    online: bool = False,
    resume: bool = False,
    device: str | torch.device | None = None,
    use_wandb: bool = False,
    val_dataset: Dataset | None = None,
    progress: bool = True,
) -> list[TrainSummary]:
    """Train one probe per config, each into its run folder, from one pass over the data; as `train` otherwise.

    The configs must draw the same batches (the same `data`, `sampler`, `seed` and number of steps); they may
    differ in the probe, its optimizer, loss, iterative clicks, logging and checkpoints. `online` asks every run to
    compute its features in the loop; without it only the probes that need the featurizer there do (early fusion),
    and the others read the store's. With `resume`, every run
    continues from its own `last.*`; the runs behind catch up with those further on."""
    rank, world, device = init_from_env(resolve_device(None if device is None else str(device)))
    folders = [Path(run_dir) for run_dir in run_dirs]
    if len(configs) != len(folders) or not folders:
        raise ValueError(f"{len(configs)} configs for {len(folders)} run folders")
    if len({folder.resolve() for folder in folders}) != len(folders):
        raise UserError(f"runs side by side need a folder each, got {', '.join(map(str, folders))}")
    for config in configs:
        if config.data.batch_size % world:
            raise UserError(
                f"data.batch_size {config.data.batch_size} must be a multiple of the {world} torchrun ranks"
            )
    # One loader gives every run its batches: they carry the store's features when a run reads them, which a
    # probe that needs the featurizer in the loop beside it (early fusion) does not change.
    loader_reads_features = any(not (online or needs_featurizer_online(config.model)) for config in configs)
    with folders_removed_if_left_empty(folders), ExitStack() as locks:
        setups = []
        for index, (config, folder) in enumerate(zip(configs, folders, strict=True)):
            folder.mkdir(parents=True, exist_ok=True)
            if rank == 0:
                locks.enter_context(exclusive_lock(folder))
                for name in ("last", "best"):
                    recover_checkpoint(folder, name)
            setup = set_up_run(
                config,
                dataset,
                folder,
                rank=rank,
                world=world,
                device=device,
                featurizer=featurizer,
                online=online,
                loader_reads_features=loader_reads_features,
                resume=resume,
                val_dataset=val_dataset,
                progress=progress and index == 0,
            )
            setups.append(setup)
        check_shared_batches(configs, setups, folders)
        refuse_ranks_that_differ(_rank_settings(configs, setups, folders, dataset))
        runs = [
            _Run(config, setup, folder, rank, device, resume, use_wandb)
            for config, setup, folder in zip(configs, setups, folders, strict=True)
        ]
        return _run_steps(runs, rank, device, progress)


def _rank_settings(
    configs: Sequence[TrainConfig], setups: Sequence[RunSetUp], folders: Sequence[Path], dataset: Dataset
) -> dict[str, Any]:
    """What a rank trains, for `refuse_ranks_that_differ`: each run's folder, settings, starting step and length,
    and the store."""
    settings: dict[str, Any] = {"store": dataset_fingerprint(dataset)}
    for index, (config, setup, folder) in enumerate(zip(configs, setups, folders, strict=True)):
        run = f"run {index + 1} ({folder.name})" if len(folders) > 1 else "the run"
        settings[f"{run} folder"] = str(folder)
        settings[f"{run} steps"] = (setup.state.step, setup.schedule.total_steps)
        settings |= {f"{run} {key}": value for key, value in dotted(config_to_dict(config)).items()}
    return settings


class _Run:
    """One probe's side of the step loop: its step on each batch, and its logs, validation and checkpoints."""

    def __init__(
        self,
        config: TrainConfig,
        setup: RunSetUp,
        run_dir: Path,
        rank: int,
        device: torch.device,
        resume: bool,
        use_wandb: bool,
    ) -> None:
        self.config, self.setup, self.run_dir, self.rank = config, setup, run_dir, rank
        self.logger = RunLogger(
            run_dir,
            config_to_dict(config),
            tensorboard=config.logging.tensorboard and rank == 0,
            use_wandb=use_wandb and rank == 0,
            wandb_project=config.logging.wandb_project,
            write_csv=rank == 0,
            resumed_at=setup.state.step if resume else None,
        )
        # A new run writes its config, one of zero steps (the untrained baseline) too; a resumed run with nothing
        # left to train keeps the one it has.
        if rank == 0 and (not resume or setup.state.step < setup.schedule.total_steps):
            atomic_write_bytes(run_dir / "config.yaml", self._config_yaml().encode())
        self.running = RunningMeans(device, setup.state.log_window if resume else None)
        self.divergence = DivergenceWatch(device)
        self.saved_step = setup.state.step if resume else None
        self.first_logged: dict[str, float] | None = None
        self.last_logged: dict[str, float] | None = None
        if resume and rank == 0:  # the trend spans the whole run: what it logged before this resume too
            earlier = logged_steps(run_dir / SCALARS_CSV, "train/", ("loss", "bce", "iou", "lr"))
            if earlier:
                self.first_logged, self.last_logged = earlier[min(earlier)], earlier[max(earlier)]
        self.diverged: Diverged | None = None
        # Samples of this invocation, and those whose target holds an object (summed on the device, read once).
        self.samples = 0
        self.samples_with_an_object = torch.zeros((), dtype=torch.long, device=device)

    def _config_yaml(self) -> str:
        """config.yaml: the run's settings, and the changes a --resume made to them, which no one config trains."""
        changes = self.setup.description.fixed["config_changes"]
        if not changes:
            return config_to_yaml(self.config)
        lines = "".join(f"#   {line}\n" for line in changes_text(changes).splitlines())
        return (
            f"# Settings changed on --resume; the steps before each change trained with the values before it:\n{lines}"
            + config_to_yaml(self.config)
        )

    def step_request(self, batch: Mapping[str, Any], prepared: dict[tuple[Any, ...], DeviceBatch]) -> StepRequest:
        """This probe's optimizer step on `batch`, to take with the other runs' (`train_steps_together`).
        `prepared` holds the batch as the runs before it put it on the device, by `Trainer.inputs_key`: each form
        is made once."""
        trainer, schedule, state = self.setup.trainer, self.setup.schedule, self.setup.state
        key = trainer.inputs_key()
        if key not in prepared:
            prepared[key] = trainer.to_device(batch)
        return StepRequest(trainer, batch, state.step, schedule.lr_at(state.step), prepared[key])

    def took(self, result: StepResult) -> None:
        """The step `step_request` asked for is taken: the running sums it feeds."""
        state = self.setup.state
        self.result = result
        state.step += 1
        self.samples += result.target.shape[0]
        self.samples_with_an_object += result.target.flatten(1).any(1).sum()
        self.running.add(result)
        self.divergence.add(result.loss, state.step)
        state.add_epoch_iou(result.iou)

    def after_step(self, batch: Mapping[str, Any], stopping: bool) -> bool:
        """Logs, validation and checkpoints due after the step just taken; whether it logged scalars."""
        config, state, schedule = self.config, self.setup.state, self.setup.schedule
        epoch_done = state.step % schedule.steps_per_epoch == 0 or state.step == schedule.total_steps
        every = config.checkpoint.every_steps
        saving = epoch_done or stopping or bool(every and state.step % every == 0)
        logging_due = state.step % config.logging.every_steps == 0 or state.step == schedule.total_steps
        lr = schedule.lr_at(state.step - 1)
        if saving or logging_due:  # the same steps on every rank
            self.divergence.check(self.setup.trainer.probe, state.step, lr, self.run_dir, self.saved_step)
        if logging_due:
            self.last_logged = {**self.running.pop(), "lr": lr}
            self.first_logged = self.first_logged or self.last_logged
            self.logger.scalars({f"train/{name}": value for name, value in self.last_logged.items()}, state.step)
        if state.step % config.logging.image_every_steps == 0:
            panels = prediction_panels(
                batch["image"], self.result.target, self.result.prob, self.result.clicks, config.logging.num_images
            )
            self.logger.images("train/predictions", panels, state.step)
        if epoch_done and self.rank == 0:
            self._close_epoch()
        elif epoch_done:
            state.reset_epoch()
        if saving:  # every rank knows the step that rank 0 saved
            if self.rank == 0:
                self._save("last")
            self.saved_step = state.step
        return logging_due

    def finish(self) -> None:
        """A run of zero steps keeps the untrained probe: the baseline that evaluation compares training with."""
        if self.setup.state.step == 0 and self.rank == 0:
            self._save("last")

    def summary(self, stopped_by: str | None) -> TrainSummary:
        state, schedule = self.setup.state, self.setup.schedule
        return TrainSummary(
            self.run_dir,
            step=state.step,
            epoch=schedule.epoch_of(max(state.step - 1, 0)),
            best_metric=state.best_value,
            best_metric_name=state.metric_name,
            best_step=state.best_step,
            first_logged=self.first_logged,
            last_logged=self.last_logged,
            stopped_by=stopped_by,
            diverged=None if self.diverged is None else str(self.diverged),
            diverged_from=None if self.diverged is None else self.diverged.first_step,
            samples=self.samples,
            samples_with_an_object=int(self.samples_with_an_object),
        )

    def _save(self, name: str) -> None:
        trainer = self.setup.trainer
        metadata = self.setup.description.metadata(self.setup.state, self.running)
        save_checkpoint(self.run_dir, name, trainer.probe, metadata, trainer.optimizer if name == "last" else None)

    def _close_epoch(self) -> None:
        """Score the epoch (validation IoU, else the epoch's training IoU) and keep the best weights."""
        state, val_loader = self.setup.state, self.setup.val_loader
        if val_loader is not None:
            val_loss, metric = self.setup.trainer.evaluate(val_loader)
            self.logger.scalars({"val/loss": val_loss, "val/iou": metric}, state.step)
            state.metric_name = "val_iou"
        else:
            metric = state.epoch_iou()
            state.metric_name = "train_iou"
        self.logger.scalars({"epoch/" + state.metric_name: metric}, state.step)
        if state.best_value is None or metric > state.best_value:
            state.best_value, state.best_step = metric, state.step
            self._save("best")
        state.reset_epoch()


def _run_steps(runs: list[_Run], rank: int, device: torch.device, progress: bool) -> list[TrainSummary]:
    """Steps from the runs' earliest step to the end of the schedule, or to the step after which a signal asked to
    stop. One loader gives every batch (the runs checked beforehand that theirs would give the same). A resumed run
    that stands further on (a kill between two runs' checkpoints) waits, batch after batch, for the others to
    reach its step, and then takes the batch it would have taken. A run beside others whose loss stops being finite
    stops alone (`Diverged`, said as it happens and in its summary): the others' numbers do not depend on it. A
    torchrun rank that loses its peers raises `LostRank`, naming the step each run has kept."""
    lead = _lead(runs)
    schedule, loader, shuffle = lead.schedule, lead.loader, lead.loader.sampler
    config = runs[0].config
    bar = tqdm(
        total=schedule.total_steps,
        initial=lead.state.step,
        unit="it",
        disable=not progress or rank != 0,
        dynamic_ncols=True,
    )
    stopping = False
    with StopRequests() as stop:
        try:
            while lead is not None and lead.state.step < schedule.total_steps and not stopping:
                epoch = schedule.epoch_of(lead.state.step)
                shuffle.start(epoch, (lead.state.step - epoch * schedule.steps_per_epoch) * config.data.batch_size)
                for batch in loader:
                    prepared: dict[tuple[Any, ...], DeviceBatch] = {}
                    stepping = [run for run in _active(runs) if run.setup.state.step == lead.state.step]
                    requests = [run.step_request(batch, prepared) for run in stepping]
                    for run, result in zip(stepping, train_steps_together(requests), strict=True):
                        run.took(result)
                    bar.update(1)
                    # Every rank asks at every step but the last, so that all of them agree on the same step.
                    stopping = lead.state.step < schedule.total_steps and stop.agreed(device)
                    logged = []
                    for run in stepping:
                        try:
                            if run.after_step(batch, stopping):
                                logged.append(run)
                        except Diverged as error:
                            if len(runs) == 1:
                                raise
                            _stop_alone(run, error, runs, rank)
                    if logged:
                        bar.set_postfix(_postfix(runs, logged))
                    lead = _lead(runs)
                    if lead is None or stopping or lead.state.step >= schedule.total_steps:
                        break
            for run in runs:
                run.finish()
        except RuntimeError as error:
            if lead is None or not lost_contact(error):
                raise
            raise LostRank(lead.state.step, {str(run.run_dir): run.saved_step for run in runs}) from None
        finally:
            bar.close()
            for run in runs:
                run.logger.close()
    barrier()
    return [run.summary(stop.signal.name if stopping else None) for run in runs]


def _active(runs: list[_Run]) -> list[_Run]:
    """The runs still training: all but those that diverged."""
    return [run for run in runs if run.diverged is None]


def _lead(runs: list[_Run]) -> RunSetUp | None:
    """The setup of the active run furthest behind, whose step the loop takes next; None when none is left."""
    return min((run.setup for run in _active(runs)), key=lambda setup: setup.state.step, default=None)


def _stop_alone(run: _Run, error: Diverged, runs: list[_Run], rank: int) -> None:
    """Take a run that diverged beside others out of the loop, saying so at once; the others go on."""
    run.diverged = error
    if rank == 0:
        going_on = "; the other runs go on" if _active(runs) else ""
        tqdm.write(f"{run.run_dir}: {error}{going_on}", file=sys.stderr)


def _postfix(runs: list[_Run], logged: list[_Run]) -> dict[str, str]:
    """The progress bar's loss, IoU and lr for one run; each logged run's loss for several."""
    if len(runs) == 1:
        last = logged[0].last_logged or {}
        return {"loss": f"{last['loss']:.4f}", "iou": f"{last['iou']:.3f}", "lr": f"{last['lr']:.1e}"}
    return {run.run_dir.name: f"{(run.last_logged or {})['loss']:.4f}" for run in logged}

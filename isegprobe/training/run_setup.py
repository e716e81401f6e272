"""Everything a training run builds and checks before its first step: the probe and its optimizer, the loaders,
the schedule, and, with --resume, the state it continues from."""

from __future__ import annotations

import logging
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from isegprobe.cache.schema import check_same_featurizer
from isegprobe.config import TrainConfig
from isegprobe.config_loading import RenamedConfigKeyWarning, config_to_dict
from isegprobe.errors import UserError
from isegprobe.model import ISProbe, runs_featurizer_online
from isegprobe.output_files import CHECKPOINT_PREFIXES, evaluation_markers_in, run_files_in
from isegprobe.same_images import refuse_validating_on_training_images, warn_when_training_on_a_test_split
from isegprobe.training.checkpoint import (
    checkpoint_files,
    imported_from,
    read_metadata,
    restore_training_state,
    resume_config,
)
from isegprobe.training.loaders import preload_device, preloads, training_loader, validation_loader
from isegprobe.training.run_state import RunDescription, RunProgress, changes_text, config_changes, recorded_changes
from isegprobe.training.schedule import StepSchedule
from isegprobe.training.store_checks import (
    check_resumed_store,
    check_resumed_validation,
    check_store_fits,
    warn_when_guidance_is_normalized_otherwise,
    warn_when_labels_predate_crop_filters,
    warn_when_sbd_is_drawn_uniformly,
)
from isegprobe.training.trainer import Trainer
from isegprobe.units import counted

log = logging.getLogger(__name__)

# What a resume may name anew of its probe: the authors' upsampler file, read only to build the probe, whose
# weights the checkpoint's then replace (a file moved since the run began).
RESUMABLE_MODEL_KEYS = ("model.upsampler.weights",)


@dataclass
class RunSetUp:
    """What the step loop runs with; `state` is where it starts (step 0, or the resumed checkpoint's)."""

    trainer: Trainer
    schedule: StepSchedule
    loader: DataLoader
    val_loader: DataLoader | None
    description: RunDescription
    state: RunProgress


def set_up_run(
    config: TrainConfig,
    dataset: Dataset,
    run_dir: Path,
    *,
    rank: int,
    world: int,
    device: torch.device,
    featurizer: nn.Module | None,
    online: bool,
    resume: bool,
    val_dataset: Dataset | None,
    progress: bool,
    loader_reads_features: bool | None = None,
) -> RunSetUp:
    """Check the data and the run folder, then build the run. The probe's weights are drawn from `config.seed`
    first, so that a run's numbers depend on its config alone. `loader_reads_features`: whether the training loader
    carries the store's features, which runs side by side share (by default, when this run reads them)."""
    if resume:
        _refuse_a_changed_probe(run_dir, config)
    else:
        _refuse_a_used_folder(run_dir, say=rank == 0)
    preprocessing = dict(dataset.preprocessing)
    size = int(preprocessing["size"])
    check_store_fits(config.data, preprocessing, getattr(dataset, "provenance", None))
    store = getattr(dataset, "store", None)  # a CachedDataset's; other datasets know no split
    if store is not None and rank == 0:
        warn_when_training_on_a_test_split(store.attrs["dataset"])
        warn_when_labels_predate_crop_filters(store.attrs["dataset"])
        warn_when_sbd_is_drawn_uniformly(store.attrs["dataset"], config.data.sample_weights)
    if store is not None and resume:
        recorded = read_metadata(checkpoint_files(run_dir, "last")["metadata"])
        check_resumed_store(store, recorded)
        check_resumed_validation(getattr(val_dataset, "store", None), recorded)
    if val_dataset is not None:
        _check_validation_matches(dataset, val_dataset, size)
    if store is not None and getattr(val_dataset, "store", None) is not None:
        refuse_validating_on_training_images(store, val_dataset.store, resume)
    online = runs_featurizer_online(config.model, online)
    if loader_reads_features is None:
        loader_reads_features = not online
    if preloads(config, device, not loader_reads_features, (dataset, val_dataset), world):
        for data in (dataset, val_dataset):
            _preload(data, preload_device(config, device), progress and rank == 0)

    torch.manual_seed(config.seed)
    probe = ISProbe(config.model, **probe_dims(dataset, featurizer if online else None, size))
    _check_upsampler_is_not_frozen_at_random(config, probe)
    if rank == 0:
        warn_when_guidance_is_normalized_otherwise(probe.upsampler, config.model.upsampler, preprocessing)
    trainer = Trainer(config, probe, preprocessing, device, featurizer if online else None, online)
    loader = training_loader(dataset, config, device, not loader_reads_features, rank, world)
    items = loader.dataset
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
        tqdm.write(_schedule_line(len(items), items.views_per_item, config.data.batch_size, schedule), file=sys.stderr)

    state, changes = RunProgress(), []
    if resume:
        metadata = restore_training_state(run_dir, trainer.probe, trainer.optimizer)
        state = RunProgress.from_metadata(metadata, checkpoint_files(run_dir, "last")["metadata"])
        if state.step >= schedule.total_steps:  # no step is taken, so no checkpoint would keep a setting changed now
            changes = recorded_changes(metadata.get("config_changes"))
            log.warning(
                "%s is at step %d already, at or past the %d steps of this schedule: nothing left to train (a run "
                "trained further is not cut back; train a new one in another folder)",
                run_dir,
                state.step,
                schedule.total_steps,
            )
        else:
            changes = config_changes(metadata["config"], config, state.step, metadata.get("config_changes"))
            if rank == 0 and changes and changes[-1]["step"] == state.step:
                log.info(
                    "%s: settings changed %s (kept in its checkpoints' config_changes)",
                    run_dir,
                    changes_text(changes[-1:]),
                )
            log.info("resuming %s at step %d of %d", run_dir, state.step, schedule.total_steps)
    if world > 1:
        trainer.distribute()
    val_loader = None if val_dataset is None else validation_loader(val_dataset, config, device, online)
    description = RunDescription(config, trainer.probe, schedule, dataset, val_dataset, preprocessing, online, changes)
    return RunSetUp(trainer, schedule, loader, val_loader, description, state)


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


def _schedule_line(images: int, views: int, batch_size: int, schedule: StepSchedule) -> str:
    """What an epoch is and how long the run lasts, said before it starts: the schedule follows from the store."""
    per_image = f" x {views} views (one per image and epoch)" if views > 1 else ""
    return (
        f"training on {counted(images, 'image')}{per_image} in batches of {batch_size}: "
        f"{counted(schedule.steps_per_epoch, 'step')} an epoch, {counted(schedule.total_steps, 'step')} in all"
    )


def _refuse_a_used_folder(run_dir: Path, say: bool) -> None:
    """A new run goes into a folder of its own. Beside another run's checkpoints it left their best there until its
    own first best, which evaluation and the demo take first, and mixed its TensorBoard log with theirs; beside an
    evaluation's results, `report` read them as the run's (as `evaluate` refuses a run's folder). What a run that
    stopped before its first checkpoint leaves (config.yaml, its logs) is taken over, as the same command run again
    expects, and said where `say` (rank 0 of a torchrun job)."""
    if (run_dir / "last.json").is_file():
        imported = imported_from(read_metadata(run_dir / "last.json"))
        if imported is not None:
            raise UserError(
                f"{run_dir} holds a probe imported by isegprobe import-seed (from {imported}); train a new probe "
                "with another --out"
            )
        raise UserError(
            f"{run_dir} already holds a run (last.json): --resume continues it; to start over, delete it or choose "
            "another --out"
        )
    held = run_files_in(run_dir)
    checkpoints = [name for name in held if name.startswith(CHECKPOINT_PREFIXES)]
    if checkpoints:
        raise UserError(
            f"{run_dir} already holds files of a run ({', '.join(held)}), without the last.json that --resume "
            "continues from: a new run there would mix its checkpoints and logs with them; delete them or choose "
            "another --out"
        )
    results = evaluation_markers_in(run_dir)
    if results:
        raise UserError(
            f"--out {run_dir}: the folder of an evaluation ({', '.join(results)}); give the run a folder of its own"
        )
    if held and say:
        log.warning(
            "%s holds what a run that stopped before its first checkpoint left (%s): this run replaces its "
            "config.yaml and scalars.csv, and TensorBoard shows the old event files beside the new until they are "
            "deleted",
            run_dir,
            ", ".join(held),
        )


def _refuse_a_changed_probe(run_dir: Path, config: TrainConfig) -> None:
    """A resumed run keeps its probe. A `model.*` key changed on --resume built a probe its weights do not fit, or
    one they fit (another upsampler, click_radius, align_corners, fusion) that computes something else from the
    resumed step on, while the run's checkpoints and results name the new setting alone."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RenamedConfigKeyWarning)  # said as the command read the run's config
        saved = config_to_dict(resume_config(run_dir))
    changes = config_changes(saved, config, 0, None)
    changed = [
        f"{key} {old!r} -> {new!r}"
        for key, (old, new) in (changes[0]["changed"] if changes else {}).items()
        if key.startswith("model.") and key not in RESUMABLE_MODEL_KEYS
    ]
    if changed:
        raise UserError(
            f"--set changed the probe of a run under way ({', '.join(changed)}): a resumed run keeps its probe; "
            "train the changed one in a new folder (another --out)"
        )


def _check_validation_matches(dataset: Dataset, val_dataset: Dataset, size: int) -> None:
    """The best checkpoint is picked on the validation store, so it must hold the training store's kind of
    features at the same working size; otherwise training would crash at the first validation or, worse, pick
    checkpoints on features the probe never saw."""
    where = f"--val-store {getattr(val_dataset, 'path', '')}"
    trained, validation = (getattr(store, "provenance", None) or {} for store in (dataset, val_dataset))
    check_same_featurizer(trained, validation, where, trained_on="training store")
    val_size = int(val_dataset.preprocessing["size"])
    if val_size != size:
        raise UserError(f"{where}: extracted at {val_size} px, the training store at {size} px")
    resizes = [store.preprocessing.get("resize", "stretch") for store in (dataset, val_dataset)]
    if resizes[0] != resizes[1]:
        raise UserError(f"{where}: extracted with --resize {resizes[1]}, the training store with --resize {resizes[0]}")


def _preload(dataset: Dataset | None, device: torch.device | None, progress: bool) -> None:
    """data.preload: a store's entries read into memory once, kept on `device` (None: in host memory), with a
    progress bar where the run shows one; a store already preloaded is left as it is."""
    if dataset is None:
        return
    preload = getattr(dataset, "preload", None)
    if preload is None:
        raise UserError(f"data.preload: {type(dataset).__name__} is not a feature store and cannot be preloaded")
    preload(device, progress=progress)


def _check_upsampler_is_not_frozen_at_random(config: TrainConfig, probe: ISProbe) -> None:
    upsampler = config.model.upsampler
    if probe.upsampler_frozen_at_random:
        raise UserError(
            f"upsampler {upsampler.name!r} has no weights: pass its authors' checkpoint with "
            f"--set model.upsampler.weights=PATH, or train it from scratch with --set model.upsampler.fine_tune=true"
        )

"""What lets probes train side by side from one loader: their configs must draw the same batches.

A batch is decided by the data settings (store views, batch size, augmentation, sample weights), RITM's point
sampler and the seed, and the run's length by the schedule's steps; the probe, its optimizer, its loss, its
iterative clicks, logging and checkpoints may differ. Checking this before the first step is what makes each run's
numbers the ones it gets alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from isegprobe.config import TrainConfig
from isegprobe.config_loading import config_to_dict
from isegprobe.errors import UserError
from isegprobe.training.run_setup import RunSetUp
from isegprobe.training.run_state import dotted

SHARED_SECTIONS = ("data", "sampler", "seed")


def check_shared_batches(configs: Sequence[TrainConfig], setups: Sequence[RunSetUp], folders: Sequence[Path]) -> None:
    """Refuse runs that would not see the same batches at the same steps, naming the first run that differs and
    how. Runs that compute their features in the loop must also agree on model.research_precision: one featurizer
    computes them all."""
    _refuse_differences(
        [(folder, _shared(config, setup)) for config, setup, folder in zip(configs, setups, folders, strict=True)],
        "data.*, sampler.*, seed and the schedule's length",
    )
    _refuse_differences(
        [
            (folder, {"model.research_precision": config.model.research_precision})
            for config, setup, folder in zip(configs, setups, folders, strict=True)
            if setup.trainer.online
        ],
        "model.research_precision where they compute their features in the loop (one featurizer computes them all)",
    )


def _refuse_differences(runs: Sequence[tuple[Path, dict[str, Any]]], what: str) -> None:
    if not runs:
        return
    first_folder, first = runs[0]
    for folder, settings in runs[1:]:
        differences = [
            f"{key} {first[key]!r} there, {value!r} here" for key, value in settings.items() if value != first[key]
        ]
        if differences:
            raise UserError(
                f"{folder} cannot train side by side with {first_folder}: "
                + "; ".join(differences)
                + f". Runs that share batches must agree on {what}; train the others separately"
            )


def _shared(config: TrainConfig, setup: RunSetUp) -> dict[str, Any]:
    """The settings that decide the batches and the steps, flattened to dotted keys."""
    flat = {key: value for key, value in dotted(config_to_dict(config)).items() if key.split(".")[0] in SHARED_SECTIONS}
    flat["steps per epoch"] = setup.schedule.steps_per_epoch
    flat["steps in all"] = setup.schedule.total_steps
    return flat

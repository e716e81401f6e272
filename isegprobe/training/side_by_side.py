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

from isegprobe.config import TrainConfig, config_to_dict
from isegprobe.errors import UserError
from isegprobe.training.run_setup import RunSetUp
from isegprobe.training.run_state import dotted

SHARED_SECTIONS = ("data", "sampler", "seed")


def check_shared_batches(configs: Sequence[TrainConfig], setups: Sequence[RunSetUp], folders: Sequence[Path]) -> None:
    """Refuse runs that would not see the same batches at the same steps, naming the first run that differs and
    how."""
    first = _shared(configs[0], setups[0])
    for config, setup, folder in zip(configs[1:], setups[1:], folders[1:], strict=True):
        differences = [
            f"{key} {first[key]!r} there, {value!r} here"
            for key, value in _shared(config, setup).items()
            if value != first[key]
        ]
        if differences:
            raise UserError(
                f"{folder} cannot train side by side with {folders[0]}: "
                + "; ".join(differences)
                + ". Runs that share batches must agree on data.*, sampler.*, seed and the schedule's length (online, "
                "on model.research_precision too: one featurizer computes their features); train "
                "the others separately"
            )


def _shared(config: TrainConfig, setup: RunSetUp) -> dict[str, Any]:
    """The settings that decide the batches and the steps, flattened to dotted keys."""
    flat = {key: value for key, value in dotted(config_to_dict(config)).items() if key.split(".")[0] in SHARED_SECTIONS}
    flat["online (features computed in the loop)"] = setup.trainer.online
    if setup.trainer.online:  # one featurizer computes every run's features
        flat["model.research_precision"] = config.model.research_precision
    flat["steps per epoch"] = setup.schedule.steps_per_epoch
    flat["steps in all"] = setup.schedule.total_steps
    return flat

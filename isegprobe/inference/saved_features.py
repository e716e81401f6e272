"""`--save-feats`: the features a probe worked from, kept for a few objects so plots can show them.

Each object gets OUT/feats/<dataset>/<id>.npz with `lowres` [C, h, w] (the cached features, or the featurizer's),
`upsampled` [C, H', W'] (the probe's upsampler on them, before any click is fused) as float16, and `image`
[S, S, 3] uint8, the working-size view they belong to.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from isegprobe.atomic_files import atomic_write_bytes
from isegprobe.inference.evaluation import ObjectTask
from isegprobe.inference.predictor import Predictor
from isegprobe.inference.visuals import file_name

SAVED_FEATURES_ENDING = ".npz"


def save_features(folder: Path, task: ObjectTask, predictor: Predictor) -> Path:
    lowres, upsampled = predictor.feature_maps(task.view)
    buffer = io.BytesIO()
    np.savez(
        buffer,
        lowres=lowres.cpu().numpy().astype(np.float16),
        upsampled=upsampled.cpu().numpy().astype(np.float16),
        image=task.view.image.permute(1, 2, 0).cpu().numpy(),
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / file_name(task.id, SAVED_FEATURES_ENDING)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def saving_features(
    tasks: Iterator[ObjectTask], predictor: Predictor, folder: Path, count: int
) -> Iterator[ObjectTask]:
    """Pass `tasks` through, saving the features of the first `count` on the way (outside the timed predictions)."""
    for index, task in enumerate(tasks):
        if index < count:
            save_features(folder, task, predictor)
        yield task

"""Saying so when a probe is trained on a benchmark's test images, or evaluated on the images it was trained on.

Some benchmarks (GrabCut, Berkeley, DAVIS) have a test split only. Training on it is allowed (a quick check, an
overfitting test), but numbers measured afterwards on the same images say how well the probe remembers them, not how
well it segments; the user must know that before reading them."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from isegprobe.cache.store import FeatureStore
from isegprobe.errors import UserError


class SameImagesWarning(UserWarning):
    """The training and the evaluation images are the same."""


def warn_when_training_on_a_test_split(dataset: dict[str, Any]) -> None:
    """`dataset` is a store's `dataset` attribute (name, split, root)."""
    if dataset.get("split") == "test":
        warnings.warn(
            f"training on the test split of {dataset.get('name')}: an evaluation on {dataset.get('name')} afterwards "
            "measures images this probe was trained on",
            SameImagesWarning,
            stacklevel=2,
        )


def refuse_validating_on_training_images(training: FeatureStore, validation: FeatureStore, resume: bool) -> None:
    """The best checkpoint is the one that scores best on the validation store; on the training images that is the
    probe that remembers them best, not the one that segments best. The same store, a copy of it or another store of
    the same images (the dataset's split from the same root, extracted again with other views) is refused: `resume`
    says that the run picked its best on them so far, so only a new run can pick it on other images."""
    trained, validated = (store.attrs["dataset"] for store in (training, validation))
    if any(trained.get(key) != validated.get(key) for key in ("name", "split", "root")):
        return
    held_out = "the store of a held-out split (extract-features --split test, or val where the dataset has one)"
    advice = f"give {held_out}"
    if resume:
        advice = f"this run picked its best on them so far, so only a new run can pick it on {held_out}"
    raise UserError(
        f"--val-store {validation.path}: the training store's images ({trained.get('name')}/{trained.get('split')}): "
        "the best checkpoint picked on them is the probe that remembers them best, not the one that segments best; "
        f"{advice}"
    )


def warn_when_evaluating_training_images(checkpoint: dict[str, Any], store: Path, dataset: dict[str, Any]) -> None:
    """`checkpoint` is a probe's metadata (it records its training store); `store` and `dataset` the store evaluated
    and its `dataset` attribute. The same store, or another store of the same dataset split, is the same images.
    An untrained probe (`train --max-iters 0`, a baseline) has seen no image yet."""
    trained_on = checkpoint.get("store_path")
    if not trained_on or checkpoint.get("step") == 0:
        return
    same = Path(trained_on).resolve() == store.resolve()
    if not same:
        same = _dataset_of(Path(trained_on)) == (dataset.get("name"), dataset.get("split"))
    if same:
        warnings.warn(
            f"{store}: this probe was trained on these images ({dataset.get('name')}/{dataset.get('split')}), so its "
            "numbers here measure how well it remembers them",
            SameImagesWarning,
            stacklevel=2,
        )


def _dataset_of(store: Path) -> tuple[Any, Any] | None:
    """(name, split) of a store's images, or None when the store is no longer there or no longer opens (the
    evaluation does not depend on it)."""
    if not (store / "zarr.json").is_file():
        return None
    try:
        dataset = FeatureStore.open(store).attrs.get("dataset") or {}
    except UserError:
        return None
    return dataset.get("name"), dataset.get("split")
